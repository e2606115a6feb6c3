"""Push authentication: Google-style OIDC tokens signed with a local key pair and
served by a local certificate endpoint (no network) are verified for signature,
expiry, issuer, audience and service account; failures answer 401/403 without
ever echoing the token."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from cloudclients import (
    CertsUnavailableError,
    PushTokenVerifier,
    ReceivedMessage,
    TokenRejectedError,
    push_endpoint,
)
from tests.helpers import PushApp, wait_for
from tests.oidc import SERVICE_ACCOUNT, KeyPair, LocalIssuer, b64url, forge, forge_hs256
from tests.servers import ROOT

AUDIENCE = "https://orders.example.com/push"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    yield issuer
    issuer.stop()


def envelope(data: bytes = b"hello") -> dict[str, Any]:
    return {
        "message": {"data": base64.b64encode(data).decode(), "attributes": {"k": "v"}, "messageId": "42",
                    "publishTime": "2024-05-01T12:00:00.123456789Z"},
        "subscription": "projects/cloudclients-test/subscriptions/orders-push",
    }


@pytest.fixture
def push_app(push_app: PushApp, issuer: LocalIssuer) -> PushApp:
    """The shared ``push_app`` (tests/conftest.py) verifying *issuer*'s tokens for AUDIENCE at /push,
    with another endpoint for another audience at /push/other; both collect into one list."""

    def make(**settings: Any) -> tuple[Flask, list[ReceivedMessage]]:
        app, received = push_app(PUSH_AUDIENCE=AUDIENCE, PUSH_CERTS_URL=issuer.certs_url, **settings)

        @app.post("/push/other")
        @push_endpoint(audience="https://other.example.com/push")
        def other(message: ReceivedMessage) -> None:
            received.append(message)

        return app, received

    return make


def post(app: Flask, token: str | None, path: str = "/push", scheme: str = "Bearer") -> Any:
    headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
    return app.test_client().post(path, json=envelope(), headers=headers)


def test_valid_token_reaches_the_view(issuer: LocalIssuer, push_app: PushApp) -> None:
    """A token signed by the issuer's key for the configured audience and account → 204, view called."""
    app, received = push_app(PUSH_SERVICE_ACCOUNT=SERVICE_ACCOUNT)
    response = post(app, issuer.token(AUDIENCE))
    assert response.status_code == 204, response.get_data(as_text=True)
    assert [m.data for m in received] == [b"hello"]


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("missing", 401, "no bearer token"),
        ("basic-scheme", 401, "not 'Bearer <token>'"),
        ("garbage", 401, "not a JWT"),
        ("expired", 401, "expired"),
        ("not-yet-valid", 401, "not valid yet"),
        ("wrong-issuer", 401, "not issued by Google"),
        ("other-key-same-kid", 401, "signature does not verify"),
        ("unknown-kid", 401, "unknown key"),
        ("tampered-payload", 401, "signature does not verify"),
        ("wrong-audience", 403, "audience"),
        ("wrong-email", 403, "service account"),
        ("email-unverified", 403, "service account"),
    ],
)
def test_bad_tokens_are_refused(  # noqa: PLR0917 (pytest passes fixtures and parameters by keyword)
    issuer: LocalIssuer, push_app: PushApp, case: str, status: int, reason: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Each way a token can be wrong gets its status and a fixed reason; the view never runs,
    and the token's text appears neither in the response nor in any log record."""
    app, received = push_app(PUSH_SERVICE_ACCOUNT=SERVICE_ACCOUNT)
    now = int(time.time())
    token: str | None
    scheme = "Bearer"
    if case == "missing":
        token = None
    elif case == "basic-scheme":
        token, scheme = base64.b64encode(b"user:SECRET-PASSWORD-1").decode(), "Basic"
    elif case == "garbage":
        token = "not.a-jwt-SECRET-GARBAGE-TOKEN-TEXT"
    elif case == "expired":
        token = issuer.token(AUDIENCE, iat=now - 7200, exp=now - 3600)
    elif case == "not-yet-valid":
        token = issuer.token(AUDIENCE, iat=now + 3600, exp=now + 7200)
    elif case == "wrong-issuer":
        token = issuer.token(AUDIENCE, iss="https://evil.example.com")
    elif case == "other-key-same-kid":
        token = issuer.token(AUDIENCE, key=KeyPair(kid=issuer.key.kid))
    elif case == "unknown-kid":
        token = issuer.token(AUDIENCE, key=KeyPair())
    elif case == "tampered-payload":
        header, _, signature = issuer.token(AUDIENCE, aud="https://other.example.com/push").split(".")
        forged = base64.urlsafe_b64encode(json.dumps(
            {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": SERVICE_ACCOUNT,
             "email_verified": True, "iat": now, "exp": now + 3600}).encode()).rstrip(b"=").decode()
        token = f"{header}.{forged}.{signature}"
    elif case == "wrong-audience":
        token = issuer.token("https://other.example.com/push")
    elif case == "wrong-email":
        token = issuer.token(AUDIENCE, email="intruder@evil-project.iam.gserviceaccount.com")
    else:
        token = issuer.token(AUDIENCE, email_verified=False)

    with caplog.at_level(logging.DEBUG):
        response = post(app, token, scheme=scheme)
    assert response.status_code == status
    body = response.get_data(as_text=True)
    assert reason in response.get_json()["detail"]
    assert received == []
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if token is not None:
        for fragment in token.split("."):
            if len(fragment) > 8:
                assert fragment not in body
                assert all(fragment not in r.getMessage() for r in caplog.records), case
                assert all(fragment not in (r.exc_text or "") for r in caplog.records), case


def test_endpoint_audience_overrides_the_setting(issuer: LocalIssuer, push_app: PushApp) -> None:
    """@push_endpoint(audience=...) checks its own audience instead of CLOUDCLIENTS_PUSH_AUDIENCE."""
    app, received = push_app()
    assert post(app, issuer.token(AUDIENCE), "/push/other").status_code == 403
    assert post(app, issuer.token("https://other.example.com/push"), "/push/other").status_code == 204
    assert len(received) == 1


def test_without_a_configured_account_any_google_account_passes(issuer: LocalIssuer, push_app: PushApp) -> None:
    """Without CLOUDCLIENTS_PUSH_SERVICE_ACCOUNT only signature, issuer and audience are checked."""
    app, _ = push_app()
    assert post(app, issuer.token(AUDIENCE, email="someone@example.com")).status_code == 204


def test_certificates_are_cached_between_pushes(issuer: LocalIssuer, push_app: PushApp) -> None:
    """Twenty pushes fetch the certificates once (max-age=3600 from the endpoint)."""
    app, received = push_app()
    for _ in range(20):
        assert post(app, issuer.token(AUDIENCE)).status_code == 204
    assert issuer.requests == 1
    assert len(received) == 20


def test_key_rotation_is_picked_up(issuer: LocalIssuer) -> None:
    """A token signed with a newly published key is refused at once (it never waits for a
    download) and starts one background refetch, after which it verifies; within the refetch
    interval an unknown key causes no fetch at all."""
    # No wall-clock timing (a loaded CI machine makes any short interval flaky): the
    # interval is set so long it cannot pass, then shortened to "has passed".
    new_key = KeyPair()
    verifier = PushTokenVerifier(issuer.certs_url, refetch_interval=3600)
    verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    issuer.publish(new_key)
    with pytest.raises(TokenRejectedError, match="unknown key"):  # fetched within the interval: no refetch yet
        verifier.verify(issuer.token(AUDIENCE, key=new_key), audience=AUDIENCE)
    assert issuer.requests == 1
    verifier.refetch_interval = 0.0
    with pytest.raises(TokenRejectedError, match="unknown key"):
        verifier.verify(issuer.token(AUDIENCE, key=new_key), audience=AUDIENCE)
    assert wait_for(lambda: verifier.stats()["keys"] == 2, 10), verifier.stats()
    claims = verifier.verify(issuer.token(AUDIENCE, key=new_key), audience=AUDIENCE)
    assert claims["aud"] == AUDIENCE
    assert issuer.requests == 2


def test_unreachable_certificates_answer_503(issuer: LocalIssuer, push_app: PushApp) -> None:
    """When the certificates cannot be fetched the push is answered 503 (Pub/Sub retries), not 401."""
    issuer.fail = True
    app, received = push_app()
    response = post(app, issuer.token(AUDIENCE))
    assert response.status_code == 503
    assert "certificates" in response.get_json()["detail"]
    assert received == []


def test_cached_certificates_survive_a_failed_refresh(issuer: LocalIssuer) -> None:
    """An expired cache whose refresh fails keeps verifying with the certificates it has,
    and the failure starts the backoff: no further download meanwhile."""
    issuer.max_age = 0
    verifier = PushTokenVerifier(issuer.certs_url, backoff=3600, max_backoff=3600)
    verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    issuer.fail = True
    assert verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)["aud"] == AUDIENCE
    assert wait_for(lambda: verifier.failures == 1, 10)
    for _ in range(5):
        assert verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)["aud"] == AUDIENCE
    assert issuer.requests == 2


def test_emulator_mode_allows_tokenless_pushes_but_still_checks_tokens(
    issuer: LocalIssuer, push_app: PushApp
) -> None:
    """With PUSH_AUTH=oidc_or_emulator and an emulator a push without a token passes, while a
    token that is present must still verify."""
    app, received = push_app(PUBSUB_EMULATOR_HOST="127.0.0.1:1", PUSH_AUTH="oidc_or_emulator")
    assert post(app, None).status_code == 204
    assert post(app, "garbage-token").status_code == 401
    assert post(app, issuer.token(AUDIENCE)).status_code == 204
    assert len(received) == 2


# -- the verifier on its own: true reasons -------------------------------------------

#: Tunings that keep these tests fast; the behaviour is the defaults' (5 s, 1 s doubling to 30 s).
FAST = {"fetch_timeout": 1.0, "backoff": 3600.0, "max_backoff": 3600.0}
#: Slack on top of a deadline for thread scheduling on a loaded machine (a serialised
#: design misses by a whole fetch timeout per waiter, far more than this).
MARGIN = 1.0


def _bad_token(issuer: LocalIssuer, case: str) -> str:
    now = int(time.time())
    kid = issuer.key.kid
    claims = issuer.claims(AUDIENCE)
    tokens: dict[str, Any] = {
        "two-segments": lambda: "SECRET-TOKEN-HEAD.SECRET-TOKEN-BODY",
        "bad-base64": lambda: "SECRET*TOKEN.SECRET*BODY.SECRET*SIG",
        "header-not-object": lambda: ".".join([b64url(b"[]"), issuer.token(AUDIENCE).split(".")[1], "c2ln"]),
        "claims-not-json": lambda: ".".join([issuer.token(AUDIENCE).split(".")[0], "bm90LWpzb24tU0VDUkVU", "c2ln"]),
        "deeply-nested-header": lambda: ".".join([b64url(b"[" * 100_000), issuer.token(AUDIENCE).split(".")[1],
                                                  "c2ln"]),
        "alg-none": lambda: forge({"alg": "none", "kid": kid}, claims),
        "alg-missing": lambda: forge({"kid": kid}, claims, b"SECRET-SIGNATURE"),
        "alg-hs256-with-the-public-cert": lambda: forge_hs256(issuer.key.cert_pem, kid, claims),
        "alg-es256": lambda: forge({"alg": "ES256", "kid": kid}, claims, b"x" * 64),
        "no-kid": lambda: forge({"alg": "RS256"}, claims, b"x" * 256),
        "kid-not-a-string": lambda: forge({"alg": "RS256", "kid": 7}, claims, b"x" * 256),
        "unknown-kid": lambda: issuer.token(AUDIENCE, key=KeyPair()),
        "other-key-same-kid": lambda: issuer.token(AUDIENCE, key=KeyPair(kid=kid)),
        "tampered-claims": lambda: ".".join([issuer.token(AUDIENCE).split(".")[0],
                                             forge({}, {**claims, "email": "x@evil.example"}).split(".")[1],
                                             issuer.token(AUDIENCE).split(".")[2]]),
        "no-exp": lambda: issuer.token(AUDIENCE, exp=None),
        "exp-not-a-number": lambda: issuer.token(AUDIENCE, exp="tomorrow"),
        "exp-nan": lambda: issuer.token(AUDIENCE, exp=float("nan")),
        "expired": lambda: issuer.token(AUDIENCE, iat=now - 7200, exp=now - 3600),
        "no-iat": lambda: issuer.token(AUDIENCE, iat=None),
        "iat-in-the-future": lambda: issuer.token(AUDIENCE, iat=now + 3600, exp=now + 7200),
        "nbf-in-the-future": lambda: issuer.token(AUDIENCE, nbf=now + 3600),
        "nbf-not-a-number": lambda: issuer.token(AUDIENCE, nbf=True),
        "wrong-issuer": lambda: issuer.token(AUDIENCE, iss="https://evil.example.com"),
        "no-audience": lambda: issuer.token(AUDIENCE, aud=None),
        "other-audience": lambda: issuer.token("https://other.example.com/push"),
        "audience-list": lambda: issuer.token(AUDIENCE, aud=[AUDIENCE, "https://other.example.com"]),
        "other-account": lambda: issuer.token(AUDIENCE, email="intruder@evil-project.iam.gserviceaccount.com"),
        "email-unverified": lambda: issuer.token(AUDIENCE, email_verified=False),
        "email-verified-missing": lambda: issuer.token(AUDIENCE, email_verified=None),
    }
    return str(tokens[case]())


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("two-segments", 401, "is not a JWT"),
        ("bad-base64", 401, "is not a JWT"),
        ("header-not-object", 401, "is not a JWT"),
        ("claims-not-json", 401, "is not a JWT"),
        ("deeply-nested-header", 401, "is not a JWT"),
        ("alg-none", 401, "not signed with RS256"),
        ("alg-missing", 401, "not signed with RS256"),
        ("alg-hs256-with-the-public-cert", 401, "not signed with RS256"),
        ("alg-es256", 401, "not signed with RS256"),
        ("no-kid", 401, "names no signing key"),
        ("kid-not-a-string", 401, "names no signing key"),
        ("unknown-kid", 401, "signed with an unknown key"),
        ("other-key-same-kid", 401, "signature does not verify"),
        ("tampered-claims", 401, "signature does not verify"),
        ("no-exp", 401, "no expiry time"),
        ("exp-not-a-number", 401, "expiry time (exp claim) is not a number"),
        ("exp-nan", 401, "expiry time (exp claim) is not a number"),
        ("expired", 401, "has expired"),
        ("no-iat", 401, "no issue time"),
        ("iat-in-the-future", 401, "not valid yet (issued in the future)"),
        ("nbf-in-the-future", 401, "not valid yet (its not-before time"),
        ("nbf-not-a-number", 401, "not-before time (nbf claim) is not a number"),
        ("wrong-issuer", 401, "not issued by Google"),
        ("no-audience", 403, "names no audience"),
        ("other-audience", 403, "audience is not this endpoint's"),
        ("audience-list", 403, "audience is not this endpoint's"),
        ("other-account", 403, "not issued to the configured service account"),
        ("email-unverified", 403, "is not verified"),
        ("email-verified-missing", 403, "is not verified"),
    ],
)
def test_each_token_failure_gives_its_true_reason(issuer: LocalIssuer, case: str, status: int, reason: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Each way a token can be wrong raises TokenRejectedError with its own status and fixed
    reason (a token without exp says so, not "signature does not verify"); neither the token
    nor its claims appear in the reason or any log record."""
    verifier = PushTokenVerifier(issuer.certs_url, **FAST)
    token = _bad_token(issuer, case)
    with caplog.at_level(logging.DEBUG), pytest.raises(TokenRejectedError) as caught:
        verifier.verify(token, audience=AUDIENCE, service_account=SERVICE_ACCOUNT)
    assert reason in caught.value.reason
    assert caught.value.status == status
    secrets = [part for part in token.split(".") if len(part) > 8] + [SERVICE_ACCOUNT.split("@")[0], "evil"]
    for text in [str(caught.value), caught.value.reason, *(r.getMessage() for r in caplog.records)]:
        assert not any(secret in text for secret in secrets), (case, text)


def test_valid_token_returns_its_claims(issuer: LocalIssuer) -> None:
    """A valid token (issued a few seconds "in the future", within the clock skew) returns all
    its claims for the view: email, sub, aud and the rest."""
    verifier = PushTokenVerifier(issuer.certs_url, **FAST)
    now = int(time.time())
    claims = verifier.verify(issuer.token(AUDIENCE, iat=now + 5, nbf=now + 5), audience=AUDIENCE,
                             service_account=SERVICE_ACCOUNT)
    assert {k: claims[k] for k in ("email", "sub", "aud", "azp", "email_verified")} == {
        "email": SERVICE_ACCOUNT, "sub": "1234567890", "aud": AUDIENCE, "azp": "1234567890", "email_verified": True}


# -- certificate formats --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["v1", "v3"])
def test_both_google_certificate_formats_verify(fmt: str) -> None:
    """Google's v1 map {kid: PEM certificate} and its v3 JWK set {"keys": [{kid, n, e, ...}]} both
    verify tokens; in a JWK set, entries that are not RSA signing keys are skipped."""
    issuer = LocalIssuer(format=fmt)
    try:
        rotated = KeyPair()
        issuer.publish(rotated)
        if fmt == "v3":
            document = json.loads(issuer.document())
            document["keys"] += [{"kty": "EC", "kid": "ec-key", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
                                 {**KeyPair().jwk(), "use": "enc"}]
            issuer.body = json.dumps(document).encode()
        verifier = PushTokenVerifier(issuer.certs_url, **FAST)
        for key in (issuer.key, rotated):
            assert verifier.verify(issuer.token(AUDIENCE, key=key), audience=AUDIENCE)["aud"] == AUDIENCE
        assert verifier.stats()["keys"] == 2
        with pytest.raises(TokenRejectedError, match="signature does not verify"):
            verifier.verify(issuer.token(AUDIENCE, key=KeyPair(kid=rotated.kid)), audience=AUDIENCE)
        assert issuer.requests == 1
    finally:
        issuer.stop()


@pytest.mark.parametrize(("size", "exponent"), [(2048, 65537), (3072, 3), (4096, 65537)])
def test_v3_keys_of_every_size_verify(size: int, exponent: int) -> None:
    """A v3 JWK's numbers become a key google-auth verifies with, whatever the modulus size (the
    DER length grows a byte past 2048 bits) and exponent: a token it signed verifies, another
    key's does not."""
    issuer = LocalIssuer(format="v3")
    try:
        key = KeyPair(key_size=size, public_exponent=exponent)
        issuer.publish(key)
        verifier = PushTokenVerifier(issuer.certs_url, **FAST)
        assert verifier.verify(issuer.token(AUDIENCE, key=key), audience=AUDIENCE)["aud"] == AUDIENCE
        forged = forge({"alg": "RS256", "kid": key.kid}, {"aud": AUDIENCE}, signature=b"\x00" * (size // 8))
        with pytest.raises(TokenRejectedError, match="signature does not verify"):
            verifier.verify(forged, audience=AUDIENCE)
    finally:
        issuer.stop()


def test_a_compressed_answer_is_decoded(issuer: LocalIssuer) -> None:
    """An answer gzip-compressed regardless of Accept-Encoding (a proxy) still verifies."""
    issuer.gzip = True
    verifier = PushTokenVerifier(issuer.certs_url, **FAST)
    assert verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)["aud"] == AUDIENCE


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>SECRET-BODY</html>", "not JSON"),
        (b'["SECRET-BODY"]', "not a JSON object"),
        (b'{"keys": "SECRET-BODY"}', "not a list"),
        (b'{"kid-1": "-----BEGIN CERTIFICATE-----SECRET-BODY"}', "no RSA signing key"),
        (b'{"keys": [{"kty": "RSA", "kid": "k", "n": "SECRET*BODY", "e": "AQAB"}]}', "no RSA signing key"),
        (b'"' + b"x" * (1 << 20) + b'"', "larger than"),
    ],
)
def test_malformed_certificate_answers_are_unavailable_not_leaked(issuer: LocalIssuer, body: bytes, why: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """An answer that holds no usable key is a failed download (CertsUnavailableError naming why,
    counted, backing off), and the answer's text is quoted nowhere."""
    issuer.body = body
    verifier = PushTokenVerifier(issuer.certs_url, **FAST)
    with caplog.at_level(logging.DEBUG), pytest.raises(CertsUnavailableError, match=why) as caught:
        verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    assert verifier.failures == 1
    assert "SECRET" not in str(caught.value) and all("SECRET" not in r.getMessage() for r in caplog.records)


# -- certificate downloads: deadlines, single flight, backoff --------------------------


def _verify_concurrently(verifier: PushTokenVerifier, token: str, n: int, limit: float) -> list[tuple[float, str]]:
    """Run *n* verifications at once; (seconds, outcome) of each, sorted; unfinished ones
    after *limit* seconds count as ``inf`` (a design that serialises never hangs the test)."""
    results: list[tuple[float, str]] = []
    start = time.monotonic()

    def one() -> None:
        try:
            verifier.verify(token, audience=AUDIENCE)
            outcome = "verified"
        except Exception as exc:
            outcome = type(exc).__name__
        results.append((round(time.monotonic() - start, 2), outcome))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(start + limit - time.monotonic(), 0.0))
    return sorted(results) + [(math.inf, "still waiting")] * (n - len(results))


@pytest.mark.parametrize("mode", ["hang", "trickle-headers"])
def test_concurrent_verifications_share_one_download_and_its_deadline(issuer: LocalIssuer, mode: str) -> None:
    """Four verifications while the certs endpoint hangs (or trickles its headers, 1 byte/s)
    share one download and each answer CertsUnavailableError within the fetch timeout, not in
    series (5, 10, 15, 20 s before); afterwards the backoff answers at once, without a request."""
    issuer.mode = mode
    verifier = PushTokenVerifier(issuer.certs_url, **FAST)
    token = issuer.token(AUDIENCE)
    results = _verify_concurrently(verifier, token, 4, limit=FAST["fetch_timeout"] + 3 * MARGIN)
    print(f"\n4 concurrent verifications, endpoint {mode}, fetch timeout {FAST['fetch_timeout']} s: {results}")
    assert [outcome for _, outcome in results] == ["CertsUnavailableError"] * 4
    assert max(seconds for seconds, _ in results) < FAST["fetch_timeout"] + MARGIN
    assert issuer.requests == 1
    started = time.monotonic()
    with pytest.raises(CertsUnavailableError, match="no complete answer within 1 s"):
        verifier.verify(token, audience=AUDIENCE)
    assert time.monotonic() - started < MARGIN
    assert issuer.requests == 1


def test_a_download_stuck_past_its_deadline_is_never_doubled(issuer: LocalIssuer) -> None:
    """While a download whose server trickles its headers is still stuck past its deadline, the
    next attempt after the backoff starts no second download: one thread, one socket at most."""
    issuer.mode, issuer.trickle_interval = "trickle-headers", 0.1  # every read well inside its timeout
    verifier = PushTokenVerifier(issuer.certs_url, fetch_timeout=0.5, backoff=0.05, max_backoff=0.05)
    token = issuer.token(AUDIENCE)
    for _ in range(3):
        with pytest.raises(CertsUnavailableError):
            verifier.verify(token, audience=AUDIENCE)
        assert wait_for(lambda: verifier.stats()["retry_in"] == 0, 5)
    assert issuer.requests == 1
    assert verifier.failures >= 2


def test_a_trickling_body_is_cut_at_the_total_deadline(issuer: LocalIssuer) -> None:
    """A server that sends its headers and then its body at 1 byte/s (each read well inside a
    per-read timeout) is cut at the fetch timeout: the verification answers CertsUnavailableError
    and the download's connection is closed by then, not after the whole body."""
    issuer.mode = "trickle"
    timeout = 2.0  # > 1 s: reads succeed before the cut, so no per-read timeout explains it
    verifier = PushTokenVerifier(issuer.certs_url, fetch_timeout=timeout, backoff=3600, max_backoff=3600)
    results = _verify_concurrently(verifier, issuer.token(AUDIENCE), 1, limit=timeout + 3 * MARGIN)
    print(f"\nbody trickled at 1 byte/s, fetch timeout {timeout} s: {results}")
    assert results[0][1] == "CertsUnavailableError"
    assert results[0][0] < timeout + MARGIN
    assert wait_for(lambda: issuer.disconnects != [], 3 * MARGIN), "the client never hung up"
    print(f"the client hung up after {issuer.disconnects[0]:.2f} s")
    assert issuer.disconnects[0] < timeout + MARGIN


def test_without_certificates_the_backoff_answers_at_once(issuer: LocalIssuer) -> None:
    """After a failed download, with no certificates cached, verifications raise
    CertsUnavailableError at once and send no request until the backoff has passed."""
    issuer.fail = True
    verifier = PushTokenVerifier(issuer.certs_url, **FAST)
    with pytest.raises(CertsUnavailableError, match="HTTP 500"):
        verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    for _ in range(10):
        with pytest.raises(CertsUnavailableError, match="next attempt in"):
            verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    assert issuer.requests == 1
    assert verifier.stats()["retry_in"] > 3000


def test_backoff_doubles_to_its_cap_and_resets_on_success(issuer: LocalIssuer) -> None:
    """Consecutive failures wait backoff, 2×, 4× ... up to max_backoff; a success resets it."""
    issuer.fail = True
    verifier = PushTokenVerifier(issuer.certs_url, fetch_timeout=1.0, backoff=0.05, max_backoff=0.2)
    periods = []
    for _ in range(5):
        assert wait_for(lambda: verifier.stats()["retry_in"] == 0, 5)
        with pytest.raises(CertsUnavailableError):
            verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
        periods.append(verifier.stats()["backoff"])
    assert periods == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert issuer.requests == 5
    issuer.fail = False
    assert wait_for(lambda: verifier.stats()["retry_in"] == 0, 5)
    assert verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)["aud"] == AUDIENCE
    assert verifier.stats()["backoff"] == 0


def test_cached_certificates_keep_verifying_while_the_endpoint_hangs(issuer: LocalIssuer) -> None:
    """Past max-age, with the endpoint hanging, verifications use the cached certificates at
    once; one background refresh is in flight, and after it fails the backoff holds the next."""
    issuer.max_age = 0  # stale as soon as fetched
    verifier = PushTokenVerifier(issuer.certs_url, fetch_timeout=0.5, backoff=3600, max_backoff=3600)
    token = issuer.token(AUDIENCE)
    verifier.verify(token, audience=AUDIENCE)
    issuer.mode = "hang"
    results = _verify_concurrently(verifier, token, 10, limit=MARGIN)
    assert [outcome for _, outcome in results] == ["verified"] * 10, results
    assert wait_for(lambda: issuer.requests == 2, 5)
    assert wait_for(lambda: not verifier.stats()["fetching"], 5)
    assert verifier.verify(token, audience=AUDIENCE)["aud"] == AUDIENCE  # records the failure
    assert verifier.verify(token, audience=AUDIENCE)["aud"] == AUDIENCE
    assert (issuer.requests, verifier.failures) == (2, 1)


def test_stale_certificates_are_refreshed_in_the_background(issuer: LocalIssuer) -> None:
    """With max-age=0 every verification after the first uses the cached set and starts one
    refresh; a refresh brings newly published keys."""
    issuer.max_age = 0
    verifier = PushTokenVerifier(issuer.certs_url, **FAST)
    new_key = KeyPair()
    verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    issuer.publish(new_key)
    verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    assert wait_for(lambda: verifier.stats()["keys"] == 2, 10)
    assert verifier.verify(issuer.token(AUDIENCE, key=new_key), audience=AUDIENCE)["aud"] == AUDIENCE
    assert wait_for(lambda: issuer.requests == 3 and not verifier.stats()["fetching"], 10)
    assert verifier.fetches == 3


# -- forged tokens -----------------------------------------------------------------------


def test_forged_unknown_kid_tokens_trigger_no_download_while_backing_off(issuer: LocalIssuer) -> None:
    """After a failed refetch, a burst of forged tokens with unknown key IDs is refused at once
    and triggers no download (even with no refetch interval), while real tokens still verify."""
    verifier = PushTokenVerifier(issuer.certs_url, refetch_interval=0.0, **FAST)
    verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    issuer.fail = True
    forger = KeyPair()
    with pytest.raises(TokenRejectedError, match="unknown key"):
        verifier.verify(issuer.token(AUDIENCE, key=forger), audience=AUDIENCE)
    assert wait_for(lambda: verifier.failures == 1, 10)
    for _ in range(50):
        with pytest.raises(TokenRejectedError, match="unknown key"):
            verifier.verify(issuer.token(AUDIENCE, key=forger), audience=AUDIENCE)
    assert verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)["aud"] == AUDIENCE
    assert issuer.requests == 2


def test_forged_unknown_kid_tokens_never_wait_for_a_hanging_endpoint(issuer: LocalIssuer) -> None:
    """With the endpoint hanging, forged unknown-kid tokens are refused at once (not after a
    fetch timeout each) and share one background refetch; real pushes meanwhile verify."""
    verifier = PushTokenVerifier(issuer.certs_url, refetch_interval=0.0, fetch_timeout=3.0, backoff=3600,
                            max_backoff=3600)
    verifier.verify(issuer.token(AUDIENCE), audience=AUDIENCE)
    issuer.mode = "hang"
    forged = issuer.token(AUDIENCE, key=KeyPair())
    outcomes = _verify_concurrently(verifier, forged, 20, limit=MARGIN)
    assert [outcome for _, outcome in outcomes] == ["TokenRejectedError"] * 20, outcomes
    assert _verify_concurrently(verifier, issuer.token(AUDIENCE), 4, limit=MARGIN)[-1][1] == "verified"
    assert wait_for(lambda: issuer.requests == 2, 5)
    assert verifier.fetches == 2


# -- configuration and forks ---------------------------------------------------------------


@pytest.mark.parametrize("param", ["fetch_timeout", "backoff", "max_backoff"])
def test_tunings_must_be_positive(param: str) -> None:
    """A zero or negative timeout or backoff is a ValueError naming the parameter."""
    with pytest.raises(ValueError, match=f"{param} must be a positive number of seconds, got 0"):
        PushTokenVerifier("http://127.0.0.1:9/certs", **{param: 0})


def test_max_backoff_below_backoff_is_refused() -> None:
    """max_backoff below backoff is a ValueError that says to raise max_backoff."""
    with pytest.raises(ValueError, match=r"max_backoff .* is below backoff .*raise max_backoff"):
        PushTokenVerifier("http://127.0.0.1:9/certs", backoff=60)


_FORK_CHILD = """
import os, sys, time
from cloudclients import PushTokenVerifier
from tests.helpers import wait_for
from tests.oidc import LocalIssuer

issuer = LocalIssuer(max_age=0)
verifier = PushTokenVerifier(issuer.certs_url, fetch_timeout=30)
token = issuer.token("aud")
verifier.verify(token, audience="aud")
issuer.mode = "hang"
verifier.verify(token, audience="aud")        # stale: a background refresh, hanging, in flight
assert wait_for(lambda: issuer.requests == 2, 10)
pid = os.fork()
if pid == 0:
    ok = not verifier.stats()["fetching"]      # the parent's download is not the child's to wait for
    ok = ok and verifier.verify(token, audience="aud")["aud"] == "aud"  # cached set, at once
    ok = ok and verifier.fetches == 3 and verifier.stats()["fetching"]  # and a refresh of its own
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), "parent fetching", verifier.stats()["fetching"])
issuer.stop()
"""


@pytest.mark.fork
def test_a_forked_child_forgets_the_parents_download_and_keeps_the_certificates() -> None:
    """In a child forked while a refresh is in flight, the verifier keeps the cached
    certificates, does not wait for the parent's download and starts its own."""
    # A fresh interpreter forks, so the child inherits no pytest threads.
    done = subprocess.run([sys.executable, "-c", _FORK_CHILD], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "child 0 parent fetching True", done.stdout + done.stderr
