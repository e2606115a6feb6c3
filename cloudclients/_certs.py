"""Google's certificate documents: the v1 ``{kid: PEM}`` map and the v3 JWK set, as RSA verifiers.

Google publishes its token-signing keys at two URLs: the v1 map ``{kid: PEM
certificate}`` (``https://www.googleapis.com/oauth2/v1/certs``, what google-auth's
``id_token.verify_token`` reads natively) and the v3 JWK set ``{"keys": [{"kid",
"n", "e", "kty", "alg", "use"}]}`` (``https://www.googleapis.com/oauth2/v3/certs``,
which google-auth only reads with PyJWT installed). Here each JWK's RSA numbers
become a PEM that google-auth's own RSA verifier loads, so both work with no
extra dependency. Nothing in a document is ever quoted in a message.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from typing import Any

from ._jwt import BASE64URL, b64decode

__all__ = ["DEFAULT_CERTS_TTL", "MAX_CERTS_TTL", "CertificatesError", "load_keys", "max_age"]

log = logging.getLogger("cloudclients")

#: How long certificates are kept when the endpoint sends no max-age, seconds.
DEFAULT_CERTS_TTL = 300.0
#: Never keep certificates longer than this before refreshing, whatever max-age says.
MAX_CERTS_TTL = 24 * 3600.0


class CertificatesError(Exception):
    """A download failed or its answer is not a certificate document; the message says
    why without quoting the answer."""


def load_keys(document: object, url: str) -> dict[str, Any]:
    """kid → RSA verifier from a v1 ``{kid: PEM}`` map or a v3 JWK set. Entries that
    are not RSA signing keys, or unreadable, are skipped (counted in a log line, never
    quoted).

    Every key goes through google-auth's ``RSAVerifier.from_string`` as PEM (a JWK's
    numbers as a PKCS#1 ``RSA PUBLIC KEY``), so verification uses whichever RSA backend
    google-auth has (``_google.keys``); this module imports no RSA library.
    """
    from ._google.keys import rsa_verifier  # google-auth: on the first download, not at import

    if not isinstance(document, dict):
        raise CertificatesError("the answer is not a JSON object")
    pems: list[tuple[object, str | None]] = []  # (kid, PEM or None when unusable)
    if "keys" in document:  # v3: {"keys": [{"kid", "kty", "alg", "use", "n", "e"}, ...]}
        jwks = document["keys"]
        if not isinstance(jwks, list):
            raise CertificatesError("the answer's 'keys' is not a list")
        for jwk in jwks:
            if not isinstance(jwk, dict):
                pems.append((None, None))
                continue
            pem = None
            if jwk.get("kty") == "RSA" and jwk.get("alg", "RS256") == "RS256" and jwk.get("use", "sig") == "sig":
                with contextlib.suppress(ValueError):
                    pem = _rsa_public_key_pem(_b64int(jwk.get("n")), _b64int(jwk.get("e")))
            pems.append((jwk.get("kid"), pem))
    else:  # v1: {kid: "-----BEGIN CERTIFICATE-----..."}
        pems = [(kid, pem if isinstance(pem, str) else None) for kid, pem in document.items()]
    keys: dict[str, Any] = {}
    for kid, pem in pems:
        if isinstance(kid, str) and kid and pem is not None:
            try:
                keys[kid] = rsa_verifier(pem)
            except Exception:  # each backend fails its own way (ValueError, pyasn1 errors): skip it
                continue
    if len(keys) < len(pems):
        log.warning("cloudclients: ignoring %d of %d entries in the push certificates from %s "
                    "(not RSA signing keys or unreadable)", len(pems) - len(keys), len(pems), url)
    if not keys:
        raise CertificatesError("the answer holds no RSA signing key")
    return keys


def _b64int(value: object) -> int:
    if not isinstance(value, str) or not value or not BASE64URL.fullmatch(value):
        raise ValueError("not a base64url number")
    return int.from_bytes(b64decode(value), "big")


def _rsa_public_key_pem(n: int, e: int) -> str:
    """The PKCS#1 ``RSA PUBLIC KEY`` PEM of modulus *n* and exponent *e*: the DER
    ``SEQUENCE { INTEGER n, INTEGER e }``, which both google-auth backends load."""
    if n <= 0 or e <= 0:
        raise ValueError("not an RSA public key")
    body = _der_integer(n) + _der_integer(e)
    text = base64.b64encode(b"\x30" + _der_length(len(body)) + body).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN RSA PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END RSA PUBLIC KEY-----\n"


def _der_integer(value: int) -> bytes:
    # One byte more than the bits need when they fill whole bytes: the leading 0 bit
    # keeps the (two's complement) INTEGER positive, and the encoding minimal.
    content = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_length(len(content)) + content


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def max_age(cache_control: str) -> float:
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.strip().isdigit():
            return min(float(value), MAX_CERTS_TTL)
    return DEFAULT_CERTS_TTL
