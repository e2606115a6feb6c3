"""A local stand-in for Google's token issuer: throwaway RSA key pairs, a
certificate endpoint on loopback serving them like Google does — the v1 map
``{key id: PEM certificate}`` (``https://www.googleapis.com/oauth2/v1/certs``) or
the v3 JWK set ``{"keys": [{"kid", "n", "e", ...}]}``
(``https://www.googleapis.com/oauth2/v3/certs``) — and ID tokens signed with
google-auth (``RSASigner`` + ``jwt.encode``) exactly as Google's look. No network.

The endpoint can also misbehave the ways a real one does: answer 500, hang
(accept the request, never answer), or trickle its answer one byte at a time."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import http.server
import json
import select
import socket
import threading
import time
from typing import Any

from cloudclients.testing import SigningKey

SERVICE_ACCOUNT = "push-invoker@cloudclients-test.iam.gserviceaccount.com"

#: What the certs endpoint does: answer, answer 500, hang, trickle the body
#: (headers at once, then one byte per ``trickle_interval``) or trickle it all
#: (status line and headers included).
MODES = ("ok", "fail", "hang", "trickle", "trickle-headers")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class KeyPair(SigningKey):
    """A throwaway signing key (cloudclients.testing's, under the name these tests use)."""


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT with any header and signature (for tokens google-auth would never sign)."""
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(signature)])


def forge_hs256(secret: str, kid: str, claims: dict[str, Any]) -> str:
    """The algorithm-confusion attack: HS256 with the *public* certificate as the HMAC secret."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


class LocalIssuer:
    """Serves the certificates of its published keys at :attr:`certs_url` and signs tokens.

    :ivar requests: how many times the certs endpoint was asked.
    :ivar mode: one of :data:`MODES` (``fail`` is a shortcut for ``mode = "fail"``).
    :ivar format: ``"v1"`` (PEM map) or ``"v3"`` (JWK set).
    :ivar body: when set, served instead of the certificates (for malformed answers).
    :ivar gzip: compress the answer (``Content-Encoding: gzip``) whatever the client accepts.
    :ivar disconnects: for trickled answers, seconds from the request until the client
        hung up (one entry per connection the client cut short).
    """

    def __init__(self, max_age: int | None = 3600, format: str = "v1") -> None:
        self.key = KeyPair()
        self.published: dict[str, KeyPair] = {self.key.kid: self.key}
        self.max_age = max_age
        self.format = format
        self.mode = "ok"
        self.body: bytes | None = None
        self.gzip = False
        self.trickle_interval = 1.0
        self.requests = 0
        self.disconnects: list[float] = []
        self._stopped = threading.Event()
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                issuer.requests += 1
                started = time.monotonic()
                mode = issuer.mode
                if mode == "hang":
                    issuer._stopped.wait(120)
                    self.close_connection = True
                    return
                if mode == "fail":
                    self._send(issuer._response(500, b""))
                    return
                response = issuer._response(200, issuer.body if issuer.body is not None else issuer.document())
                if mode == "ok":
                    self._send(response)
                    return
                split = 0 if mode == "trickle-headers" else response.index(b"\r\n\r\n") + 4
                self._send(response[:split])
                for i in range(split, len(response)):
                    if not self._send(response[i:i + 1]) or self._client_gone(issuer.trickle_interval):
                        issuer.disconnects.append(time.monotonic() - started)
                        break
                self.close_connection = True

            def _send(self, data: bytes) -> bool:
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:
                    return False
                return True

            def _client_gone(self, wait: float) -> bool:
                """Wait *wait* seconds (less if the issuer stops); True if the client hung up."""
                deadline = time.monotonic() + wait
                while (remaining := deadline - time.monotonic()) > 0 and not issuer._stopped.is_set():
                    readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.05))
                    if readable:
                        try:
                            return self.connection.recv(1, socket.MSG_PEEK) == b""
                        except OSError:
                            return True
                return issuer._stopped.is_set()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.certs_url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/{self.format}/certs"

    @property
    def fail(self) -> bool:
        return self.mode == "fail"

    @fail.setter
    def fail(self, value: bool) -> None:
        self.mode = "fail" if value else "ok"

    def publish(self, key: KeyPair) -> None:
        """Add *key* to the served certificates (a rotation)."""
        self.published[key.kid] = key

    def document(self) -> bytes:
        """The certificates as the endpoint serves them in :attr:`format`."""
        if self.format == "v3":
            return json.dumps({"keys": [key.jwk() for key in self.published.values()]}).encode()
        return json.dumps({kid: key.cert_pem for kid, key in self.published.items()}).encode()

    def _response(self, status: int, body: bytes) -> bytes:
        lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Internal Server Error'}",
                 "Content-Type: application/json", "Connection: close"]
        if self.gzip:
            body = gzip.compress(body)
            lines.append("Content-Encoding: gzip")
        lines.append(f"Content-Length: {len(body)}")
        if self.max_age is not None and status == 200:
            lines.append(f"Cache-Control: public, max-age={self.max_age}, must-revalidate, no-transform")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def token(self, audience: str, *, key: KeyPair | None = None, **overrides: Any) -> str:
        """A Google-style push token for *audience*; *overrides* replace or (None) drop claims."""
        return (key or self.key).sign(self.claims(audience, **overrides))

    def claims(self, audience: str, **overrides: Any) -> dict[str, Any]:
        """The claims of a Google push token; *overrides* replace or (None) drop claims."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com", "aud": audience, "azp": "1234567890",
            "sub": "1234567890", "email": SERVICE_ACCOUNT, "email_verified": True,
            "iat": now, "exp": now + 3600,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
