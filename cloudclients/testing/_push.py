"""Push requests for tests: the service's envelope, and Google-style OIDC tokens from a local issuer.

:func:`push_envelope` builds the JSON body Pub/Sub POSTs to a push endpoint.
:class:`PushTokenIssuer` is a throwaway signing key with its public keys served on
loopback in both of Google's formats (the v1 PEM map and the v3 JWKS), so an app
that verifies push tokens is tested end to end without the network: point
``CLOUDCLIENTS_PUSH_CERTS_URL`` at :attr:`PushTokenIssuer.certs_url` and sign
tokens with :meth:`PushTokenIssuer.sign_push_token`. :func:`sign_push_token` signs with the
process-wide :func:`default_push_token_issuer` (the ``push_token_issuer`` fixture is that one too).
"""

from __future__ import annotations

import atexit
import base64
import datetime
import http.server
import itertools
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["PushTokenIssuer", "SigningKey", "default_push_token_issuer", "push_envelope", "sign_push_token"]

_IDS = itertools.count(1)
#: The service account tokens name unless told otherwise.
DEFAULT_EMAIL = "push@test-project.iam.gserviceaccount.com"


def push_envelope(
    data: bytes | str = b"",
    attributes: Mapping[str, str] | None = None,
    *,
    message_id: str | None = None,
    publish_time: datetime.datetime | str | None = None,
    subscription: str = "projects/test-project/subscriptions/push",
    ordering_key: str = "",
    delivery_attempt: int | None = None,
) -> dict[str, Any]:
    """The body Pub/Sub POSTs to a push endpoint, as the service sends it.

    Both the camelCase fields and the snake_case aliases the service adds are
    present (``messageId``/``message_id``, ``publishTime``/``publish_time``), and
    ``attributes`` always is (``{}`` when there are none), as the service sends it.

    :param data: the payload (``str`` is UTF-8 encoded), sent base64-encoded.
    :param message_id: default: a fresh numeric ID.
    :param publish_time: default: now; a ``datetime`` (naive means UTC) or an RFC 3339 string.
    :param delivery_attempt: sent as ``deliveryAttempt`` (only subscriptions with a
        dead-letter policy report it).
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    when = publish_time if publish_time is not None else datetime.datetime.now(datetime.UTC)
    if isinstance(when, datetime.datetime):
        aware = when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)
        when = aware.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    ident = message_id if message_id is not None else str(next(_IDS))
    message: dict[str, Any] = {
        "data": base64.b64encode(payload).decode("ascii"),
        "messageId": ident, "message_id": ident, "publishTime": when, "publish_time": when,
    }
    message["attributes"] = dict(attributes or {})  # the service sends it even when empty
    if ordering_key:
        message["orderingKey"] = ordering_key
    body: dict[str, Any] = {"message": message, "subscription": subscription}
    if delivery_attempt is not None:
        body["deliveryAttempt"] = delivery_attempt
    return body


class SigningKey:
    """A throwaway RSA key with a self-signed certificate, named by a key ID, that signs
    tokens the way Google signs ID tokens (RS256, ``kid`` in the header).

    :param kid: the key ID (default: random).
    """

    def __init__(self, kid: str | None = None, *, key_size: int = 2048, public_exponent: int = 65537) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.kid = kid or uuid.uuid4().hex
        key = rsa.generate_private_key(public_exponent=public_exponent, key_size=key_size)
        #: The private key, PKCS#8 PEM.
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        #: The public key's numbers (``n``, ``e``).
        self.public_numbers = key.public_key().public_numbers()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudclients-test-issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
            .sign(key, hashes.SHA256())
        )
        #: The certificate, PEM: what Google's v1 certificate map holds.
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._signer: Any = None

    def jwk(self) -> dict[str, str]:
        """This key as an entry of a v3 JWK set."""
        numbers = self.public_numbers
        return {"kid": self.kid, "kty": "RSA", "alg": "RS256", "use": "sig",
                "n": _b64url(numbers.n), "e": _b64url(numbers.e)}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact RS256 JWT of *claims* with this key's ``kid``."""
        from .._google.keys import rsa_signer, signed_jwt

        if self._signer is None:  # parsing the key takes ~40 ms: once per key
            self._signer = rsa_signer(self.private_pem, self.kid)
        return signed_jwt(self._signer, claims)


class PushTokenIssuer:
    """A local stand-in for Google's token issuer: throwaway signing keys, their certificates
    served at :attr:`certs_url` (v1, ``{kid: PEM}``) and :attr:`jwks_url` (v3, JWKS) on
    127.0.0.1, and ID tokens signed exactly as Pub/Sub push attaches them.

    Use it as a context manager, or the ``push_token_issuer`` fixture::

        def test_push(push_token_issuer, monkeypatch):
            app.config["CLOUDCLIENTS_PUSH_CERTS_URL"] = push_token_issuer.certs_url
            token = push_token_issuer.sign_push_token(audience="https://app/push")

    :ivar key: the key tokens are signed with (:meth:`rotate` replaces it).
    :ivar requests: how many times the certificates were fetched.
    """

    def __init__(self, *, max_age: int = 3600) -> None:
        self.key = SigningKey()
        self._published: dict[str, SigningKey] = {self.key.kid: self.key}
        self.max_age = max_age
        self.requests = 0
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name="cloudclients-push-token-issuer")
        self._thread.start()
        base = f"http://127.0.0.1:{self._server.server_address[1]}"
        #: The v1 certificate URL (``{kid: PEM certificate}``), for ``CLOUDCLIENTS_PUSH_CERTS_URL``.
        self.certs_url = f"{base}/oauth2/v1/certs"
        #: The v3 JWKS URL.
        self.jwks_url = f"{base}/oauth2/v3/certs"

    def rotate(self, *, retire: bool = False) -> SigningKey:
        """Sign with a new key from now on (published next to the old one, as Google rotates;
        with *retire*, the old one is withdrawn). Returns the new key."""
        old, self.key = self.key, SigningKey()
        self._published[self.key.kid] = self.key
        if retire:
            self._published.pop(old.kid, None)
        return self.key

    def sign_push_token(
        self,
        audience: str,
        *,
        email: str = DEFAULT_EMAIL,
        lifetime: float = 3600.0,
        **claims: Any,
    ) -> str:
        """An RS256 ID token as Pub/Sub push sends it: ``iss`` accounts.google.com, *audience*,
        *email* (verified), ``sub``, ``iat``, ``exp`` (*lifetime* seconds from now).

        :param claims: extra or replacement claims; ``None`` removes one (say, ``exp=None``).
        """
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": "https://accounts.google.com", "aud": audience, "azp": "100000000000000000001",
            "sub": "100000000000000000001", "email": email, "email_verified": True,
            "iat": now, "exp": now + int(lifetime),
        }
        for name, value in claims.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        return self.key.sign(payload)

    def documents(self) -> tuple[bytes, bytes]:
        """The v1 and v3 certificate documents as served now."""
        v1 = json.dumps({kid: key.cert_pem for kid, key in self._published.items()}).encode()
        v3 = json.dumps({"keys": [key.jwk() for key in self._published.values()]}).encode()
        return v1, v3

    def close(self) -> None:
        """Stop serving the certificates. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> PushTokenIssuer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_DEFAULT: PushTokenIssuer | None = None
_DEFAULT_LOCK = threading.Lock()


def default_push_token_issuer() -> PushTokenIssuer:
    """The process-wide :class:`PushTokenIssuer`: started on first use, serving its certificates on
    127.0.0.1 until the interpreter exits. Point ``CLOUDCLIENTS_PUSH_CERTS_URL`` at its
    :attr:`~PushTokenIssuer.certs_url` (or ``jwks_url``) to accept the tokens of :func:`sign_push_token`."""
    global _DEFAULT  # noqa: PLW0603 - one issuer per process
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = PushTokenIssuer()
                atexit.register(_DEFAULT.close)
    return _DEFAULT


def sign_push_token(
    audience: str,
    *,
    email: str = DEFAULT_EMAIL,
    issuer: PushTokenIssuer | None = None,
    lifetime: float = 3600.0,
    **claims: Any,
) -> str:
    """An ID token as Pub/Sub push attaches it (``Authorization: Bearer …``), signed by *issuer*
    (default: :func:`default_push_token_issuer`, whose ``certs_url`` must be the app's
    ``CLOUDCLIENTS_PUSH_CERTS_URL``)::

        app.config["CLOUDCLIENTS_PUSH_CERTS_URL"] = default_push_token_issuer().certs_url
        token = sign_push_token("https://orders.example.com/push")

    :param audience: the ``aud`` claim: the endpoint's configured audience.
    :param email: the push service account (``email``, verified).
    :param lifetime: seconds from now to ``exp``.
    :param claims: extra or replacement claims; ``None`` removes one (say, ``exp=None``).
    """
    signer = issuer if issuer is not None else default_push_token_issuer()
    return signer.sign_push_token(audience, email=email, lifetime=lifetime, **claims)


def _handler(issuer: PushTokenIssuer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            v1, v3 = issuer.documents()
            body = {"/oauth2/v1/certs": v1, "/oauth2/v3/certs": v3}.get(self.path.split("?")[0])
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            issuer.requests += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", f"public, max-age={issuer.max_age}, must-revalidate")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
