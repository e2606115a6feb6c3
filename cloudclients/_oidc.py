"""Verify the OIDC ID token Pub/Sub push attaches as ``Authorization: Bearer``.

A push subscription configured with a service account signs every push with a
Google ID token: an RS256 JWT whose ``aud`` is the subscription's audience
(by default the endpoint URL), ``iss`` is ``accounts.google.com`` and
``email`` the service account. Anyone can POST to a public endpoint, so an
endpoint that does not check all three accepts forged messages.

Signature checking uses google-auth (``google.auth.jwt.decode``, imported
on first use: ``import cloudclients`` stays light). Google's signing
certificates rotate; they are cached for the ``Cache-Control: max-age`` the
certs endpoint sends and fetched again early when a token names a key we do
not know (at most once per :data:`REFETCH_INTERVAL`, so garbage tokens cannot
turn the endpoint into a certs-fetching amplifier).

Errors never carry the token or its claims: google-auth's messages quote the
token text for some failures ("Wrong number of segments in token: …"), so
every failure is mapped to one of a few fixed reasons here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from ._fork import ProcessBound

__all__ = ["GOOGLE_ISSUERS", "CertsUnavailableError", "OidcVerifier", "TokenRejectedError"]

log = logging.getLogger("cloudclients")

#: The ``iss`` values of Google-signed ID tokens.
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})

#: Accepted clock difference between Google and this machine, seconds.
CLOCK_SKEW = 10
#: How long certificates are kept when the endpoint sends no max-age, seconds.
DEFAULT_CERTS_TTL = 300.0
#: Never keep certificates longer than this, whatever max-age says.
MAX_CERTS_TTL = 24 * 3600.0
#: Minimum time between two fetches triggered by an unknown key ID.
REFETCH_INTERVAL = 30.0
#: Timeout of one certs request, seconds.
FETCH_TIMEOUT = 5.0


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


class CertsUnavailableError(Exception):
    """Google's signing certificates could not be fetched (the push is answered
    503 and retried by Pub/Sub, rather than rejected)."""


@dataclass(frozen=True)
class _Certs:
    by_kid: Mapping[str, str]
    expires: float
    fetched: float


class OidcVerifier(ProcessBound):
    """Verifies Google ID tokens against a cached set of signing certificates.

    Thread-safe; one per app. Holds no connection between fetches; in a forked
    child it keeps the cached certificates (plain data) and gets a fresh lock.

    :param certs_url: where the ``{key id: PEM certificate}`` JSON lives.
    :param refetch_interval: minimum seconds between two fetches caused by a
        token signed with an unknown key.
    :ivar fetches: how many times the certificates were fetched.
    """

    def __init__(self, certs_url: str, *, refetch_interval: float = REFETCH_INTERVAL) -> None:
        super().__init__()
        self.certs_url = certs_url
        self.refetch_interval = refetch_interval
        self._certs: _Certs | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def verify(self, token: str, *, audience: str, service_account: str | None = None) -> Mapping[str, Any]:
        """Return the verified claims of *token*.

        Checks the RS256 signature against Google's certificates, ``iat`` and
        ``exp`` (with :data:`CLOCK_SKEW`), ``iss`` ∈ :data:`GOOGLE_ISSUERS`,
        ``aud`` == *audience* and, when given, ``email`` == *service_account*
        with ``email_verified``.

        :raises TokenRejectedError: for any token that does not verify.
        :raises CertsUnavailableError: if the certificates cannot be fetched.
        """
        from google.auth import exceptions as auth_exceptions
        from google.auth import jwt

        self._checkpid()
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
            payload = jwt.decode(token, verify=False)  # type: ignore[no-untyped-call]
        except (auth_exceptions.GoogleAuthError, ValueError, TypeError):
            raise TokenRejectedError(401, "the bearer token is not a JWT") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejectedError(401, "the bearer token names no signing key")
        pem = self._cert_for(kid)
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs={kid: pem}, verify=True, audience=None, clock_skew_in_seconds=CLOCK_SKEW
            )
        except (auth_exceptions.GoogleAuthError, ValueError, TypeError):
            raise TokenRejectedError(401, _why_invalid(payload)) from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise TokenRejectedError(401, "the bearer token was not issued by Google")
        if claims.get("aud") != audience:
            raise TokenRejectedError(403, "the bearer token's audience is not this endpoint's")
        if service_account is not None and (
            claims.get("email") != service_account or claims.get("email_verified") is not True
        ):
            raise TokenRejectedError(403, "the bearer token was not issued to the configured service account")
        return claims

    # -- certificates -----------------------------------------------------------

    def _cert_for(self, kid: str) -> str:
        now = time.monotonic()
        certs = self._certs
        if certs is None or now >= certs.expires:
            certs = self._refresh(force=False)
        if kid not in certs.by_kid and now - certs.fetched >= self.refetch_interval:
            # A key we do not know yet: Google may have just rotated.
            certs = self._refresh(force=True)
        try:
            return certs.by_kid[kid]
        except KeyError:
            raise TokenRejectedError(401, "the bearer token is signed with an unknown key") from None

    def _refresh(self, *, force: bool) -> _Certs:
        with self._lock:
            now = time.monotonic()
            current = self._certs
            # Another thread may have fetched while we waited for the lock.
            if current is not None and (
                (not force and now < current.expires) or (force and now - current.fetched < self.refetch_interval)
            ):
                return current
            try:
                response = requests.get(self.certs_url, timeout=FETCH_TIMEOUT)
                response.raise_for_status()
                body = response.json()
            except (requests.RequestException, ValueError) as exc:
                if current is not None:
                    # Keep verifying with what we have; rotations overlap by days.
                    log.warning("cloudclients: refreshing push certificates from %s failed (%s); "
                                "keeping the cached set", self.certs_url, type(exc).__name__)
                    return current
                raise CertsUnavailableError(
                    f"could not fetch token-signing certificates from {self.certs_url} ({type(exc).__name__})"
                ) from None
            if not isinstance(body, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in body.items()
            ):
                raise CertsUnavailableError(f"{self.certs_url} did not return a {{key id: PEM certificate}} object")
            ttl = _max_age(response.headers.get("Cache-Control", ""))
            self.fetches += 1
            self._certs = _Certs(by_kid=dict(body), expires=now + ttl, fetched=now)
            log.debug("cloudclients: fetched %d push certificate(s), cached for %.0f s", len(body), ttl)
            return self._certs


    # -- fork handling (see _fork) ---------------------------------------------------

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        self._lock = threading.Lock()  # may be held by a parent thread fetching certificates


def _max_age(cache_control: str) -> float:
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.strip().isdigit():
            return min(float(value), MAX_CERTS_TTL)
    return DEFAULT_CERTS_TTL


def _why_invalid(payload: Mapping[str, Any]) -> str:
    # Only the unverified expiry is looked at, to pick a more useful fixed reason.
    exp = payload.get("exp")
    if isinstance(exp, (int, float)) and exp + CLOCK_SKEW < time.time():
        return "the bearer token has expired"
    iat = payload.get("iat")
    if isinstance(iat, (int, float)) and iat - CLOCK_SKEW > time.time():
        return "the bearer token is not valid yet"
    return "the bearer token's signature does not verify"
