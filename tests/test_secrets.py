"""Secrets hygiene: a planted private key and access token never show up in a repr,
a log line or an exception message.

The credentials file holds a freshly generated RSA key; its ``token_uri`` points at a
local server that hands out a planted access token. Then everything that can talk
happens for real: settings, registry and client reprs, client construction, a token
refresh, failing Storage and Pub/Sub calls (nothing listens for Google's hosts here),
a failing publish through a request, broken credentials files. Every log record
(all loggers, DEBUG) and every message is scanned for the secrets.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

import cloudclients
from cloudclients import CloudClients, ConfigError, Settings

ACCESS_TOKEN = "ya29.PLANTED-ACCESS-TOKEN-7f3a9c"
KEY_ID = "planted0key0id0d41d8cd98f00b204e9800998ecf8427e"


class TokenHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def token_uri() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


@pytest.fixture
def key_file(tmp_path: Path, token_uri: str) -> tuple[Path, list[str]]:
    """A service-account file with a real (throwaway) key; returns it and the secret strings."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "planted-project",
        "private_key_id": KEY_ID,
        "private_key": pem,
        "client_email": "planted@planted-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    # Distinctive fragments: any line of the key body, the key id, the token.
    body_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return path, [KEY_ID, ACCESS_TOKEN, body_lines[1], body_lines[-2], pem.replace("\n", "\\n")[40:100]]


def scan(texts: list[str], secrets: list[str]) -> list[tuple[str, str]]:
    return [(secret[:12], text[:200]) for text in texts for secret in secrets if secret in text]


@pytest.mark.cloudclients_allow_production  # real credentials (a planted key), calls refused on loopback
def test_no_secret_in_reprs_logs_or_errors(
    key_file: tuple[Path, list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, secrets = key_file
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)  # every logger: ours, google.auth, urllib3, grpc

    app = Flask("secrets-app")
    app.config.update(
        CLOUDCLIENTS_PROJECT="planted-project",
        CLOUDCLIENTS_CREDENTIALS_FILE=str(path),
        CLOUDCLIENTS_PRODUCTION=True,
        CLOUDCLIENTS_PUBLISH_TIMEOUT=1,
    )
    CloudClients(app)

    @app.post("/publish")
    def publish_view() -> Any:
        cloudclients.publish("orders", b"x", secretive="no")
        return {"ok": True}

    state = CloudClients.get_state(app)
    registry = state.registry
    try:
        texts += [repr(state), repr(state.settings), str(state.settings.redacted()), repr(registry)]
        with app.app_context():
            publisher, subscriber, storage = (
                cloudclients.get_publisher(), cloudclients.get_subscriber(), cloudclients.get_storage()
            )
            texts += [repr(publisher), repr(subscriber), repr(storage), repr(registry), str(registry.stats())]
            # A real token refresh against the planted token server (what Storage does before a call).
            storage._credentials.refresh(storage._http._auth_request)
            assert storage._credentials.token == ACCESS_TOKEN  # the secret is live in this process
            subscription = "projects/p/subscriptions/s"
            for call in (lambda: storage.get_bucket("b", timeout=2, retry=None),
                         lambda: subscriber.get_subscription(subscription=subscription, timeout=1, retry=None)):
                with pytest.raises(Exception) as info:  # noqa: PT011 - any failure; we read its message
                    call()
                texts += [str(info.value), repr(info.value)]
        response = app.test_client().post("/publish")
        assert response.status_code == 503
        texts.append(response.get_data(as_text=True))
    finally:
        registry.close(timeout=2)

    # Broken credentials files: the error names the file, never its contents.
    text = path.read_text()
    for name, content in [("truncated.json", text[: len(text) // 2]),
                          ("no-email.json", text.replace('"client_email"', '"client_mail"')),
                          ("list.json", json.dumps([json.loads(text)]))]:
        broken = tmp_path / name
        broken.write_text(content)
        with pytest.raises(ConfigError) as error:
            Settings.from_mapping(
                {"CLOUDCLIENTS_PROJECT": "planted-project", "CLOUDCLIENTS_CREDENTIALS_FILE": str(broken)}
            )
        texts += [str(error.value), repr(error.value)]

    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert len(texts) > 20
    assert any("planted-project" in t for t in texts)  # the scan does see real content
    assert scan(texts, secrets) == []
