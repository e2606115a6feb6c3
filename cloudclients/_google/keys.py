"""google-auth's RSA keys: the verifiers push tokens are checked with (``_certs``), and the
signer the testing kit's token issuer signs with.

Only ``google.auth.crypt`` is imported here: whichever RSA backend google-auth has
(``cryptography`` is a hard dependency of google-auth only since 2.48; before, it may be
the pure-Python ``rsa``), and nothing of Pub/Sub or gRPC. ``google.auth.jwt`` (~40 ms, 50
modules more) is imported by :func:`signed_jwt` alone, which only the testing kit calls:
verifying push tokens does not pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.auth import crypt

__all__ = ["rsa_signer", "rsa_verifier", "signed_jwt"]


def rsa_verifier(pem: str) -> Any:
    """An RS256 verifier of the public key or certificate *pem*.

    :raises Exception: whatever the backend raises for a key it cannot load
        (``ValueError``, pyasn1 errors …): the caller skips that key.
    """
    return crypt.RSAVerifier.from_string(pem)  # type: ignore[no-untyped-call]


def rsa_signer(private_pem: str, key_id: str) -> Any:
    """An RS256 signer of the private key *private_pem*, stamping *key_id* as ``kid``."""
    return crypt.RSASigner.from_string(private_pem, key_id=key_id)  # type: ignore[no-untyped-call]


def signed_jwt(signer: Any, claims: Mapping[str, Any]) -> str:
    """A compact JWT of *claims* signed by *signer* (from :func:`rsa_signer`)."""
    from google.auth import jwt

    return str(jwt.encode(signer, dict(claims)).decode())  # type: ignore[no-untyped-call]
