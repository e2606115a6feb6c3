"""A stand-in for the GCE / Cloud Run metadata server on loopback, for project discovery tests.

google-auth reads ``GCE_METADATA_HOST`` / ``GCE_METADATA_IP`` when it is first imported, so the
code under test runs in a fresh interpreter started with :attr:`FakeMetadataServer.env`.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any


class FakeMetadataServer:
    """Answers like the metadata server of a Cloud Run service in *project* (or, with
    ``project=None``, like a machine that has none: 404 without the Metadata-Flavor header).

    :ivar requests: every request, in order: when (``time.monotonic()``, the same clock in every
        process of this machine) and its path.
    """

    def __init__(self, project: str | None = "cloud-run-project") -> None:
        self.project = project
        self.requests: list[tuple[float, str]] = []  # one append per request: atomic across handler threads
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((time.monotonic(), self.path))
                if server.project is None:
                    self._send(404, b"not found", flavor=False)
                elif self.path.rstrip("/") in ("", "/computeMetadata/v1"):
                    self._send(200, b"computeMetadata/")
                elif self.path.startswith("/computeMetadata/v1/project/project-id"):
                    self._send(200, server.project.encode())
                elif "/service-accounts/default/token" in self.path:
                    self._send(200, json.dumps({"access_token": "fake-token", "expires_in": 3600,
                                                "token_type": "Bearer"}).encode())
                elif "/service-accounts/default/email" in self.path:
                    self._send(200, b"runner@cloud-run-project.iam.gserviceaccount.com")
                else:
                    self._send(404, b"not found")

            def _send(self, status: int, body: bytes, *, flavor: bool = True) -> None:
                self.send_response(status)
                if flavor:
                    self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/json" if body.startswith(b"{") else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        host = f"127.0.0.1:{self._server.server_address[1]}"
        #: Environment that points google-auth at this server (and nowhere else). NO_GCE_CHECK=false
        #: undoes the pytest plugin's NO_GCE_CHECK=true (inherited from this test run): the code under
        #: test must look for the metadata server, as on Cloud Run.
        self.env = {"GCE_METADATA_HOST": host, "GCE_METADATA_IP": host, "GCE_METADATA_TIMEOUT": "2",
                    "NO_GCE_CHECK": "false"}


    @property
    def paths(self) -> list[str]:
        """Every path requested, in order."""
        return [path for _, path in self.requests]
    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
