"""Verify the OIDC ID token Pub/Sub push attaches as ``Authorization: Bearer``.

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

Certificates
------------
Google publishes its signing keys at two URLs, both accepted as
``certs_url``: the v1 map ``{kid: PEM certificate}``
(``https://www.googleapis.com/oauth2/v1/certs``, what google-auth's
``id_token.verify_token`` reads natively) and the v3 JWK set ``{"keys": [{"kid",
"n", "e", "kty", "alg", "use"}]}`` (``https://www.googleapis.com/oauth2/v3/certs``,
which google-auth only reads with PyJWT installed; here each key's RSA numbers
become a PEM that google-auth's own RSA verifier loads).

They are cached for the ``Cache-Control: max-age`` the endpoint sends. The
rules, so that a slow or dead endpoint (or a flood of forged tokens) never
makes pushes slow:

* **Nothing waits on a lock held during I/O.** One download at a time runs on
  its own daemon thread (single flight); callers that need it wait on its
  event, each at most until the download's *total* deadline
  (:attr:`OidcVerifier.fetch_timeout`, not a per-read timeout that a server
  sending a byte at a time can stretch for ever). The body is read piece by
  piece against that deadline, so a trickling server is cut off.
* **Only a verifier with no certificates at all waits.** Past max-age, the
  cached set keeps verifying and the call that notices starts a refresh in
  the background; if that refresh fails the cached set stays in use (Google
  overlaps key rotations by days).
* **Negative cache.** After a failed download no new one starts for
  :attr:`OidcVerifier.backoff` seconds, doubling per consecutive failure up
  to :attr:`OidcVerifier.max_backoff`. Meanwhile, without cached
  certificates, :meth:`OidcVerifier.verify` raises
  :class:`CertsUnavailableError` at once (the push is answered 503 and
  retried by Pub/Sub).
* **Unknown key IDs never wait and are rate-limited.** A token naming a key
  we do not have is refused at once; it starts a background refetch (Google
  may have rotated) only if none ran in the last
  :attr:`OidcVerifier.refetch_interval` seconds and none is backing off.

The verifier needs threads to run (uWSGI: ``enable-threads``, which the
Pub/Sub publisher needs anyway, see docs/deployment.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from ._fork import ProcessBound

__all__ = ["GOOGLE_ISSUERS", "CertsUnavailableError", "OidcVerifier", "TokenRejectedError"]

log = logging.getLogger("cloudclients")

#: The ``iss`` values of Google-signed ID tokens.
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})

#: Accepted clock difference between Google and this machine, seconds.
CLOCK_SKEW = 10
#: How long certificates are kept when the endpoint sends no max-age, seconds.
DEFAULT_CERTS_TTL = 300.0
#: Never keep certificates longer than this before refreshing, whatever max-age says.
MAX_CERTS_TTL = 24 * 3600.0
#: Default minimum time between two fetches triggered by an unknown key ID, seconds.
REFETCH_INTERVAL = 30.0
#: Default total deadline of one certificate download (connect, headers and body), seconds.
FETCH_TIMEOUT = 5.0
#: Default wait after a failed download before the next one, doubled per failure, seconds.
BACKOFF = 1.0
#: Default cap of that wait, seconds.
MAX_BACKOFF = 30.0
#: Larger answers are not certificates (Google's are a few kilobytes).
MAX_CERTS_BYTES = 1 << 20

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

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


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


class _FetchError(Exception):
    """A download failed; the message says why without quoting the answer."""


@dataclass(frozen=True)
class _KeySet:
    keys: Mapping[str, Any]  # kid → google.auth.crypt.RSAVerifier
    fetched: float  # time.monotonic()
    expires: float


class _Fetch:
    """One download in flight. Its thread records the outcome and sets ``done``;
    a caller that waited until ``deadline`` in vain records a failure instead."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = threading.Event()
        self.keys: _KeySet | None = None


class OidcVerifier(ProcessBound):
    """Verifies Google ID tokens against a cached set of signing certificates.

    Thread-safe; one per app. Holds no connection between downloads; in a
    forked child it keeps the cached certificates (plain data), forgets a
    download in flight (its thread is the parent's) and gets a fresh lock.

    :param certs_url: Google's certificates, v1 ``{kid: PEM}`` or v3 JWK set.
    :param fetch_timeout: total deadline of one download, seconds.
    :param refetch_interval: minimum seconds between two downloads caused by a
        token signed with an unknown key.
    :param backoff: seconds without a download after a failed one, doubled per
        consecutive failure ...
    :param max_backoff: ... up to this.
    :raises ValueError: for a non-positive timeout or backoff, or max_backoff < backoff.
    :ivar fetches: downloads started.
    :ivar failures: downloads that failed (error, bad answer or deadline).
    """

    def __init__(self, certs_url: str, *, fetch_timeout: float = FETCH_TIMEOUT,
                 refetch_interval: float = REFETCH_INTERVAL, backoff: float = BACKOFF,
                 max_backoff: float = MAX_BACKOFF) -> None:
        for name, value in (("fetch_timeout", fetch_timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if not value > 0:
                raise ValueError(f"OidcVerifier: {name} must be a positive number of seconds, got {value!r}")
        if max_backoff < backoff:
            raise ValueError(f"OidcVerifier: max_backoff ({max_backoff!r} s) is below backoff ({backoff!r} s); "
                             "raise max_backoff too")
        self.certs_url = certs_url
        self.fetch_timeout = fetch_timeout
        self.refetch_interval = refetch_interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fetches = 0
        self.failures = 0
        self._lock = threading.Lock()  # guards the fields below; never held during I/O
        self._keys: _KeySet | None = None
        self._fetch: _Fetch | None = None  # the download callers may still wait for
        self._thread: threading.Thread | None = None  # its thread (may outlive the deadline)
        self._failed_in_a_row = 0
        self._retry_at = 0.0  # no download starts before this (monotonic)
        self._last_start = -math.inf  # when the last download started
        self._last_error = ""
        super().__init__()  # last: the fork hooks may see this object from here on

    def verify(self, token: str, *, audience: str, service_account: str | None = None) -> Mapping[str, Any]:
        """Return the verified claims of *token* (``email``, ``sub``, ``aud``, ...).

        Checks the RS256 signature against Google's certificates, ``exp``,
        ``iat`` and ``nbf`` (with :data:`CLOCK_SKEW`), ``iss`` ∈
        :data:`GOOGLE_ISSUERS`, ``aud`` == *audience* and, when given,
        ``email`` == *service_account* with ``email_verified``.

        :raises TokenRejectedError: for any token that does not verify (401),
            or verifies but is for another audience or account (403).
        :raises CertsUnavailableError: if there are no certificates to check
            against and none could be fetched within the fetch timeout (or
            downloads are backing off after a failure).
        """
        self._checkpid()
        header, claims, signed, signature = _parse(token)
        if header.get("alg") != "RS256":
            raise TokenRejectedError(401, NOT_RS256)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejectedError(401, NO_KID)
        if not _signature_ok(self._key_for(kid), signed, signature):
            raise TokenRejectedError(401, BAD_SIGNATURE)
        _check_claims(claims, audience, service_account)
        return claims

    def stats(self) -> dict[str, Any]:
        """Counters and cache state: ``fetches``, ``failures``, ``keys`` (cached
        key count), ``age`` (seconds since the cached set was fetched, or None),
        ``stale`` (past max-age), ``fetching`` (a download in flight),
        ``backoff`` (the current wait after consecutive failures, 0 when
        healthy) and ``retry_in`` (seconds until a download may start)."""
        self._checkpid()
        now = time.monotonic()
        with self._lock:
            keys = self._keys
            return {
                "fetches": self.fetches, "failures": self.failures,
                "keys": len(keys.keys) if keys else 0,
                "age": now - keys.fetched if keys else None,
                "stale": keys is not None and now >= keys.expires,
                "fetching": self._fetch is not None and now < self._fetch.deadline,
                "backoff": self._backoff_period(),
                "retry_in": max(self._retry_at - now, 0.0),
            }

    # -- certificates ---------------------------------------------------------------

    def _key_for(self, kid: str) -> Any:
        now = time.monotonic()
        with self._lock:
            keys = self._keys
            if keys is not None:
                if now >= keys.expires:
                    self._start(now)  # past max-age: refresh in the background, verify with what we have
                if kid in keys.keys:
                    return keys.keys[kid]
                if now - self._last_start >= self.refetch_interval:
                    self._start(now)  # Google may have rotated; this token does not wait for it
                raise TokenRejectedError(401, UNKNOWN_KID)
            fetch = self._start(now)
            if fetch is None:
                raise CertsUnavailableError(self._unavailable(now))
        keys = self._wait(fetch) or self._keys  # (or a stuck earlier download's late success)
        if keys is None:
            with self._lock:
                raise CertsUnavailableError(self._unavailable(time.monotonic()))
        if kid not in keys.keys:
            raise TokenRejectedError(401, UNKNOWN_KID)
        return keys.keys[kid]

    def _start(self, now: float) -> _Fetch | None:
        """The download to wait for: the one in flight, else a new one; None while
        backing off. Caller holds the lock."""
        fetch = self._fetch
        if fetch is not None:
            if now < fetch.deadline:
                return fetch
            self._record(fetch, None, self._late())
        if now < self._retry_at:
            return None
        if self._thread is not None and self._thread.is_alive():
            # The last download is stuck past its deadline (a server trickling its
            # headers, a DNS lookup that hangs; its waiters have been answered). Never
            # run two: count it as another failure and try after the next backoff.
            self._fail("the previous download is still stuck")
            return None
        fetch = _Fetch(now + self.fetch_timeout)
        thread = threading.Thread(target=self._download, args=(fetch,), daemon=True,
                                  name="cloudclients-certs-fetch")
        self._fetch, self._thread = fetch, thread
        self._last_start = now
        self.fetches += 1
        thread.start()
        return fetch

    def _wait(self, fetch: _Fetch) -> _KeySet | None:
        """Wait for *fetch* until its deadline (no lock held); its certificates or None."""
        if fetch.done.wait(max(fetch.deadline - time.monotonic(), 0.0)):
            return fetch.keys
        with self._lock:
            self._record(fetch, None, self._late())  # no-op if the thread finished meanwhile
        return fetch.keys

    def _download(self, fetch: _Fetch) -> None:
        """The download thread: fetch, then record the outcome (never raises)."""
        keys: _KeySet | None = None
        error = ""
        try:
            keys = self._get(fetch.deadline)
        except _FetchError as exc:
            error = str(exc)
        except Exception as exc:  # whatever happens, the waiters must hear of it
            error = f"unexpected {type(exc).__name__}"
            log.warning("cloudclients: downloading push certificates from %s failed unexpectedly",
                        self.certs_url, exc_info=True)
        with self._lock:
            self._record(fetch, keys, error)

    def _record(self, fetch: _Fetch, keys: _KeySet | None, error: str) -> None:
        """Record the outcome of *fetch*, once (a deadline passing and the thread's own
        late error are one failure; a late success is still used). Caller holds the lock."""
        if self._fetch is fetch:
            self._fetch = None
        if keys is not None:
            self._keys = keys
            self._failed_in_a_row, self._retry_at = 0, 0.0
            log.debug("cloudclients: fetched %d push certificate(s), cached for %.0f s",
                      len(keys.keys), keys.expires - keys.fetched)
        elif not fetch.done.is_set():
            self._fail(error)
        if not fetch.done.is_set():
            fetch.keys = keys
            fetch.done.set()

    def _fail(self, error: str) -> None:
        """Count a failed download and start (or lengthen) the backoff. Caller holds the lock."""
        self.failures += 1
        self._failed_in_a_row += 1
        delay = self._backoff_period()
        self._retry_at = time.monotonic() + delay
        self._last_error = error
        # At most one line per backoff period: failures cannot happen faster.
        log.warning("cloudclients: fetching push certificates from %s failed (%s); next attempt in %.1f s "
                    "at the earliest; %s", self.certs_url, error, delay,
                    "verifying with the cached set meanwhile" if self._keys else
                    "pushes are answered 503 (retried by Pub/Sub) until then")

    def _backoff_period(self) -> float:
        if not self._failed_in_a_row:
            return 0.0
        return float(min(self.backoff * 2.0 ** min(self._failed_in_a_row - 1, 30), self.max_backoff))

    def _late(self) -> str:
        return f"no complete answer within {self.fetch_timeout:g} s"

    def _unavailable(self, now: float) -> str:
        return (f"could not fetch token-signing certificates from {self.certs_url} ({self._last_error}); "
                f"next attempt in {max(self._retry_at - now, 0.0):.1f} s at the earliest")

    def _get(self, deadline: float) -> _KeySet:
        """Download and parse the certificates, all within *deadline* (monotonic)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _FetchError(self._late())
        try:
            # timeout= bounds connecting and each read; the loop below bounds the whole body.
            with requests.get(self.certs_url, timeout=remaining, stream=True,
                              headers={"Accept": "application/json", "Accept-Encoding": "identity"}) as response:
                if response.status_code != 200:
                    raise _FetchError(f"HTTP {response.status_code}")
                body = self._read_body(response, deadline)
                ttl = _max_age(response.headers.get("Cache-Control", ""))
        except requests.RequestException as exc:
            raise _FetchError(type(exc).__name__) from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise _FetchError("the answer is not JSON") from None
        keys = _load_keys(document, self.certs_url)
        now = time.monotonic()
        return _KeySet(keys=keys, fetched=now, expires=now + ttl)

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        # A socket timeout is per read: a server sending a byte every second never
        # trips it. So the body is read in pieces of whatever has arrived (read1:
        # one receive at most), the socket's timeout set to the time left before
        # each, and the download abandoned (the connection closed on leaving the
        # with block) once the deadline has passed.
        raw = response.raw
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if hasattr(raw, "read1"):
            def read() -> bytes:
                return bytes(raw.read1(65536, decode_content=True))
        else:  # an older urllib3: byte by byte
            def read() -> bytes:
                return bytes(raw.read(1, decode_content=True))
        body = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _FetchError(self._late())
            if sock is not None:
                sock.settimeout(remaining)
            try:
                piece = read()
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # timeout, reset, bad chunk
                raise _FetchError(type(exc).__name__) from None
            if not piece:
                return bytes(body)
            body += piece
            if len(body) > MAX_CERTS_BYTES:
                raise _FetchError(f"the answer is larger than {MAX_CERTS_BYTES} bytes")

    # -- fork handling (see _fork) --------------------------------------------------

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        # The download thread (if any) is the parent's: nobody here will finish it.
        self._lock = threading.Lock()
        self._fetch = None
        self._thread = None


# -- tokens -------------------------------------------------------------------------


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signed part and signature of a compact JWS, unverified."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_BASE64URL.fullmatch(part) for part in parts):
        raise TokenRejectedError(401, NOT_A_JWT)
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, RecursionError):  # bad base64, not UTF-8, not JSON, nested too deep
        raise TokenRejectedError(401, NOT_A_JWT) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejectedError(401, NOT_A_JWT)
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def _signature_ok(verifier: Any, signed: bytes, signature: bytes) -> bool:
    try:
        return bool(verifier.verify(signed, signature))
    except (ValueError, TypeError):
        return False


def _check_claims(claims: Mapping[str, Any], audience: str, service_account: str | None) -> None:
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


# -- certificate documents ----------------------------------------------------------


def _load_keys(document: object, url: str) -> dict[str, Any]:
    """kid → RSA verifier from a v1 ``{kid: PEM}`` map or a v3 JWK set. Entries that
    are not RSA signing keys, or unreadable, are skipped (counted in a log line, never
    quoted).

    Every key goes through google-auth's ``RSAVerifier.from_string`` as PEM (a JWK's
    numbers as a PKCS#1 ``RSA PUBLIC KEY``), so verification uses whichever RSA backend
    google-auth has: ``cryptography`` is a hard dependency of google-auth only since
    2.48; before, it may be the pure-Python ``rsa``, and this module imports neither.
    """
    from google.auth import crypt

    if not isinstance(document, dict):
        raise _FetchError("the answer is not a JSON object")
    pems: list[tuple[object, str | None]] = []  # (kid, PEM or None when unusable)
    if "keys" in document:  # v3: {"keys": [{"kid", "kty", "alg", "use", "n", "e"}, ...]}
        jwks = document["keys"]
        if not isinstance(jwks, list):
            raise _FetchError("the answer's 'keys' is not a list")
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
                keys[kid] = crypt.RSAVerifier.from_string(pem)  # type: ignore[no-untyped-call]
            except Exception:  # each backend fails its own way (ValueError, pyasn1 errors): skip it
                continue
    if len(keys) < len(pems):
        log.warning("cloudclients: ignoring %d of %d entries in the push certificates from %s "
                    "(not RSA signing keys or unreadable)", len(pems) - len(keys), len(pems), url)
    if not keys:
        raise _FetchError("the answer holds no RSA signing key")
    return keys


def _b64int(value: object) -> int:
    if not isinstance(value, str) or not value or not _BASE64URL.fullmatch(value):
        raise ValueError("not a base64url number")
    return int.from_bytes(_b64decode(value), "big")


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


def _max_age(cache_control: str) -> float:
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.strip().isdigit():
            return min(float(value), MAX_CERTS_TTL)
    return DEFAULT_CERTS_TTL
