"""OIDC tokens for push: the ``Authorization: Bearer`` JWT and the certificates that verify it.

A push subscription with ``push_config.oidc_token`` gets, on every POST, an ID
token shaped like the one Google attaches: RS256, ``kid`` in the header, and
the claims ``iss`` (``https://accounts.google.com``), ``aud`` (the token's
``audience``, else the endpoint URL), ``azp`` and ``sub`` (a numeric ID derived
from the service account), ``email``, ``email_verified``, ``iat`` and ``exp``
(one hour later). The key is the emulator's own: an RSA key made once per
process, whose public half is served in Google's two formats on the emulator's
port — ``/oauth2/v1/certs`` (``{kid: PEM certificate}``, a self-signed X.509
certificate wrapping the key) and ``/oauth2/v3/certs`` (a JWK set) — so an app
under test verifies pushes as in production with only its certificates URL
changed.

The key is made on first use (the first signed push or certificates request),
not at start: ``cryptography`` and RSA key generation cost about 60 ms, more
than a quarter of the emulator's start-up, and most runs never push with a
token. It never changes afterwards, so tokens and certificates always match.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import time
from typing import Any

__all__ = ["CERTS_MAX_AGE", "GOOGLE_ISSUER", "TOKEN_LIFETIME", "TokenSigner", "subject_id"]

GOOGLE_ISSUER = "https://accounts.google.com"
#: Seconds a token is valid, as Google's push tokens.
TOKEN_LIFETIME = 3600
#: ``Cache-Control: max-age`` of the certificate documents (the key never rotates).
CERTS_MAX_AGE = 3600
#: How long the self-signed certificate is valid either side of the emulator's start.
_CERT_VALIDITY = datetime.timedelta(days=365)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_int(number: int) -> str:
    return _b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def subject_id(email: str) -> str:
    """A stable 21-digit ``sub`` for *email*, shaped like a Google account's numeric ID.

    Google's ``sub`` is the service account's unique ID; a hash of the email
    keeps it the same for the same account across runs and processes.
    """
    digest = int.from_bytes(hashlib.sha256(email.encode()).digest()[:16], "big")
    return "1" + str(digest % 10**20).zfill(20)


class TokenSigner:
    """Signs push tokens with the emulator's key and serves its public half."""

    def __init__(self) -> None:
        self._key: Any = None  # cryptography RSAPrivateKey, made by _ensure
        self.kid = ""
        self._v1 = b""
        self._v3 = b""

    def _ensure(self) -> None:
        if self._key is not None:
            return
        # Deferred imports: see the module docstring (start-up cost).
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        # Google's key IDs are 40 hex digits; a digest of the key is as unique and says which key it is.
        kid = hashlib.sha1(der, usedforsecurity=False).hexdigest()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudclients-emulator")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CERT_VALIDITY).not_valid_after(now + _CERT_VALIDITY)
            .sign(key, hashes.SHA256())
        )
        numbers = public.public_numbers()
        self._v1 = json.dumps({kid: cert.public_bytes(serialization.Encoding.PEM).decode("ascii")}).encode()
        self._v3 = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                                         "n": _b64url_int(numbers.n), "e": _b64url_int(numbers.e)}]}).encode()
        self.kid = kid
        self._key = key

    def token(self, audience: str, email: str, now: float | None = None) -> str:
        """A compact RS256 JWT for a push to *audience* on behalf of *email*."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        self._ensure()
        issued = int(time.time() if now is None else now)
        sub = subject_id(email)
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        claims = {"aud": audience, "azp": sub, "email": email, "email_verified": True,
                  "exp": issued + TOKEN_LIFETIME, "iat": issued, "iss": GOOGLE_ISSUER, "sub": sub}
        signed = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
        signature = self._key.sign(signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signed}.{_b64url(signature)}"

    def certs_v1(self) -> bytes:
        """``{kid: PEM certificate}``, as ``https://www.googleapis.com/oauth2/v1/certs``."""
        self._ensure()
        return self._v1

    def certs_v3(self) -> bytes:
        """The JWK set, as ``https://www.googleapis.com/oauth2/v3/certs``."""
        self._ensure()
        return self._v3
