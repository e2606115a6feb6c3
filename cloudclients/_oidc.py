"""Verify the OIDC ID token Pub/Sub push attaches as ``Authorization: Bearer``.

:class:`PushTokenVerifier` checks a token (``_jwt``: its parsing and checks, each
failure with a fixed reason) against Google's signing keys (``_certs``: the two
document formats), which it downloads and caches here.

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
  (:attr:`PushTokenVerifier.fetch_timeout`, not a per-read timeout that a server
  sending a byte at a time can stretch for ever). The body is read piece by
  piece against that deadline, so a trickling server is cut off.
* **Only a verifier with no certificates at all waits.** Past max-age, the
  cached set keeps verifying and the call that notices starts a refresh in
  the background; if that refresh fails the cached set stays in use (Google
  overlaps key rotations by days).
* **Negative cache.** After a failed download no new one starts for
  :attr:`PushTokenVerifier.backoff` seconds, doubling per consecutive failure up
  to :attr:`PushTokenVerifier.max_backoff`. Meanwhile, without cached
  certificates, :meth:`PushTokenVerifier.verify` raises
  :class:`CertsUnavailableError` at once (the push is answered 503 and
  retried by Pub/Sub).
* **Unknown key IDs never wait and are rate-limited.** A token naming a key
  we do not have is refused at once; it starts a background refetch (Google
  may have rotated) only if none ran in the last
  :attr:`PushTokenVerifier.refetch_interval` seconds and none is backing off.

The verifier needs threads to run (uWSGI: ``enable-threads``, which the
Pub/Sub publisher needs anyway, see docs/deployment.md).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from ._certs import CertificatesError, load_keys, max_age
from ._fork import ProcessBound
from ._jwt import (
    BAD_SIGNATURE,
    NO_KID,
    NOT_RS256,
    UNKNOWN_KID,
    TokenRejectedError,
    check_claims,
    parse,
    signature_ok,
)

__all__ = ["CertsUnavailableError", "PushTokenVerifier", "TokenRejectedError"]

log = logging.getLogger("cloudclients")

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

class CertsUnavailableError(Exception):
    """Google's signing certificates could not be fetched (the push is answered
    503 and retried by Pub/Sub, rather than rejected)."""


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


class PushTokenVerifier(ProcessBound):
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
                raise ValueError(f"PushTokenVerifier: {name} must be a positive number of seconds, got {value!r}")
        if max_backoff < backoff:
            raise ValueError(f"PushTokenVerifier: max_backoff ({max_backoff!r} s) is below backoff ({backoff!r} s); "
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
        header, claims, signed, signature = parse(token)
        if header.get("alg") != "RS256":
            raise TokenRejectedError(401, NOT_RS256)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejectedError(401, NO_KID)
        if not signature_ok(self._key_for(kid), signed, signature):
            raise TokenRejectedError(401, BAD_SIGNATURE)
        check_claims(claims, audience, service_account)
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
        except CertificatesError as exc:
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
            raise CertificatesError(self._late())
        try:
            # timeout= bounds connecting and each read; the loop below bounds the whole body.
            with requests.get(self.certs_url, timeout=remaining, stream=True,
                              headers={"Accept": "application/json", "Accept-Encoding": "identity"}) as response:
                if response.status_code != 200:
                    raise CertificatesError(f"HTTP {response.status_code}")
                body = self._read_body(response, deadline)
                ttl = max_age(response.headers.get("Cache-Control", ""))
        except requests.RequestException as exc:
            raise CertificatesError(type(exc).__name__) from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise CertificatesError("the answer is not JSON") from None
        keys = load_keys(document, self.certs_url)
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
                raise CertificatesError(self._late())
            if sock is not None:
                sock.settimeout(remaining)
            try:
                piece = read()
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # timeout, reset, bad chunk
                raise CertificatesError(type(exc).__name__) from None
            if not piece:
                return bytes(body)
            body += piece
            if len(body) > MAX_CERTS_BYTES:
                raise CertificatesError(f"the answer is larger than {MAX_CERTS_BYTES} bytes")

    # -- fork handling (see _fork) --------------------------------------------------

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        # The download thread (if any) is the parent's: nobody here will finish it.
        self._lock = threading.Lock()
        self._fetch = None
        self._thread = None


