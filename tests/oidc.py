"""A local stand-in for Google's token issuer: a throwaway RSA key pair, a
certificate endpoint on loopback serving ``{key id: PEM certificate}`` like
``https://www.googleapis.com/oauth2/v1/certs``, and ID tokens signed with
google-auth (``RSASigner`` + ``jwt.encode``) exactly as Google's look. No network."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import time
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

SERVICE_ACCOUNT = "push-invoker@cloudclients-test.iam.gserviceaccount.com"


class KeyPair:
    """An RSA key with a self-signed certificate, named by a key ID."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudclients-test-issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, claims: dict[str, Any]) -> str:
        signer = crypt.RSASigner.from_string(self.private_pem, key_id=self.kid)
        return jwt.encode(signer, claims).decode()  # type: ignore[no-any-return]


class LocalIssuer:
    """Serves the certificates of its published keys at :attr:`certs_url` and signs tokens.

    :ivar requests: how many times the certs endpoint was fetched.
    """

    def __init__(self, max_age: int | None = 3600) -> None:
        self.key = KeyPair()
        self.published: dict[str, str] = {self.key.kid: self.key.cert_pem}
        self.max_age = max_age
        self.requests = 0
        self.fail = False
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests += 1
                if issuer.fail:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(issuer.published).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if issuer.max_age is not None:
                    self.send_header("Cache-Control", f"public, max-age={issuer.max_age}, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.certs_url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"

    def token(self, audience: str, *, key: KeyPair | None = None, **overrides: Any) -> str:
        """A Google-style push token for *audience*; *overrides* replace or (None) drop claims."""
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
        return (key or self.key).sign(claims)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
