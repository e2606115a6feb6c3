"""Google ID tokens (the OIDC tokens Pub/Sub push attaches): parsing and the checks.

A push subscription configured with a service account signs every push with a
Google ID token: an RS256 JWT whose ``aud`` is the subscription's audience
(by default the endpoint URL), ``iss`` is ``accounts.google.com`` and
``email`` the service account. Anyone can POST to a public endpoint, so an
endpoint that does not check all three accepts forged messages.

Tokens
------
Each check has its own fixed reason (the token's text and claims never
appear in a reason, a log record or an exception):

=================================================  ======  ====================================
token                                              status  reason (``TokenRejectedError.reason``)
=================================================  ======  ====================================
not three base64url segments of JSON objects       401     :data:`NOT_A_JWT`
``alg`` other than RS256 (``none``, HS256, ES256)  401     :data:`NOT_RS256`
no ``kid`` in the header                           401     :data:`NO_KID`
``kid`` not among Google's keys                    401     :data:`UNKNOWN_KID`
signature does not verify                          401     :data:`BAD_SIGNATURE`
no ``exp`` / ``exp`` not a number                  401     :data:`NO_EXP` / :data:`BAD_EXP`
``exp`` in the past                                401     :data:`EXPIRED`
no ``iat`` / ``iat`` not a number                  401     :data:`NO_IAT` / :data:`BAD_IAT`
``iat`` or ``nbf`` in the future                   401     :data:`ISSUED_IN_FUTURE` / :data:`NOT_BEFORE`
``nbf`` not a number                               401     :data:`BAD_NBF`
``iss`` not Google                                 401     :data:`WRONG_ISSUER`
no ``aud`` / another ``aud``                       403     :data:`NO_AUDIENCE` / :data:`WRONG_AUDIENCE`
``email`` not the configured service account       403     :data:`WRONG_ACCOUNT`
``email_verified`` not true (account configured)   403     :data:`EMAIL_UNVERIFIED`
=================================================  ======  ====================================

The time claims allow :data:`CLOCK_SKEW`. The signature is checked with
google-auth's ``google.auth.crypt.RSAVerifier`` (PKCS#1 v1.5, SHA-256) before
any claim is looked at; the claims are checked here rather than by
``google.auth.jwt.decode`` because its failures cannot be told apart (a token
without ``exp`` and a forged signature both raise ``MalformedError``) and some
of its messages quote the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["CLOCK_SKEW", "GOOGLE_ISSUERS", "TokenRejectedError", "b64decode", "check_claims", "parse",
           "signature_ok"]

#: The ``iss`` values of Google-signed ID tokens.
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})

#: Accepted clock difference between Google and this machine, seconds.
CLOCK_SKEW = 10

# The reasons (fixed sentences, see the table in the module docstring).
NOT_A_JWT = "the bearer token is not a JWT"
NOT_RS256 = "the bearer token is not signed with RS256, the algorithm of Google ID tokens"
NO_KID = "the bearer token names no signing key (no kid in its header)"
UNKNOWN_KID = "the bearer token is signed with an unknown key"
BAD_SIGNATURE = "the bearer token's signature does not verify"
NO_EXP = "the bearer token has no expiry time (no exp claim)"
BAD_EXP = "the bearer token's expiry time (exp claim) is not a number"
EXPIRED = "the bearer token has expired"
NO_IAT = "the bearer token has no issue time (no iat claim)"
BAD_IAT = "the bearer token's issue time (iat claim) is not a number"
ISSUED_IN_FUTURE = "the bearer token is not valid yet (issued in the future)"
BAD_NBF = "the bearer token's not-before time (nbf claim) is not a number"
NOT_BEFORE = "the bearer token is not valid yet (its not-before time is in the future)"
WRONG_ISSUER = "the bearer token was not issued by Google"
NO_AUDIENCE = "the bearer token names no audience"
WRONG_AUDIENCE = "the bearer token's audience is not this endpoint's"
WRONG_ACCOUNT = "the bearer token was not issued to the configured service account"
EMAIL_UNVERIFIED = "the bearer token's email (the configured service account) is not verified"


BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenRejectedError(Exception):
    """The push request's token is missing or does not verify.

    :ivar status: 401 (no valid Google token) or 403 (a valid token that is
        not for this endpoint: audience or service account differ).
    :ivar reason: a fixed, token-free sentence for the response body and logs.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signed part and signature of a compact JWS, unverified."""
    parts = token.split(".")
    if len(parts) != 3 or not all(BASE64URL.fullmatch(part) for part in parts):
        raise TokenRejectedError(401, NOT_A_JWT)
    try:
        header = json.loads(b64decode(parts[0]))
        claims = json.loads(b64decode(parts[1]))
        signature = b64decode(parts[2])
    except (ValueError, RecursionError):  # bad base64, not UTF-8, not JSON, nested too deep
        raise TokenRejectedError(401, NOT_A_JWT) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejectedError(401, NOT_A_JWT)
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def signature_ok(verifier: Any, signed: bytes, signature: bytes) -> bool:
    try:
        return bool(verifier.verify(signed, signature))
    except (ValueError, TypeError):
        return False


def check_claims(claims: Mapping[str, Any], audience: str, service_account: str | None) -> None:
    now = time.time()
    if _time_claim(claims, "exp", NO_EXP, BAD_EXP) + CLOCK_SKEW < now:
        raise TokenRejectedError(401, EXPIRED)
    if _time_claim(claims, "iat", NO_IAT, BAD_IAT) - CLOCK_SKEW > now:
        raise TokenRejectedError(401, ISSUED_IN_FUTURE)
    if "nbf" in claims and _time_claim(claims, "nbf", BAD_NBF, BAD_NBF) - CLOCK_SKEW > now:
        raise TokenRejectedError(401, NOT_BEFORE)
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise TokenRejectedError(401, WRONG_ISSUER)
    if claims.get("aud") in (None, "", []):
        raise TokenRejectedError(403, NO_AUDIENCE)
    if claims.get("aud") != audience:
        raise TokenRejectedError(403, WRONG_AUDIENCE)
    if service_account is not None:
        if claims.get("email") != service_account:
            raise TokenRejectedError(403, WRONG_ACCOUNT)
        if claims.get("email_verified") is not True:
            raise TokenRejectedError(403, EMAIL_UNVERIFIED)


def _time_claim(claims: Mapping[str, Any], name: str, missing: str, malformed: str) -> float:
    if name not in claims:
        raise TokenRejectedError(401, missing)
    value = claims[name]
    # bool is an int; NaN and infinities would compare as never expiring.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenRejectedError(401, malformed)
    return float(value)
