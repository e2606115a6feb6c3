"""Push authentication modes, chosen explicitly and checked before any push arrives: OIDC (claims
reach the view), OIDC-or-emulator (one setting for local and production), platform-authenticated
(Cloud Run IAM / IAP), unauthenticated (emulator only) and a custom verifier; endpoints that can
never accept anything, and the decorator-order mistake, are reported when the app starts serving."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Request, Response, abort

import cloudclients
from cloudclients import CloudClients, ConfigError, ReceivedMessage, push_endpoint
from tests.helpers import MakeApp, PushApp
from tests.oidc import SERVICE_ACCOUNT, LocalIssuer

AUDIENCE = "https://orders.example.com/push"
EMULATOR = "127.0.0.1:1"
BODY = {"message": {"data": base64.b64encode(b"hi").decode(), "messageId": "1"}}


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    yield issuer
    issuer.stop()


def post(app: Flask, token: str | None = None, path: str = "/push", body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().post(path, json=BODY if body is None else body, headers=headers)


def test_oidc_claims_reach_the_view(push_app: PushApp, issuer: LocalIssuer) -> None:
    """A verified token's claims (email, sub, aud) are on message.claims."""
    app, seen = push_app(PUSH_AUDIENCE=AUDIENCE, PUSH_CERTS_URL=issuer.certs_url)
    assert post(app, issuer.token(AUDIENCE)).status_code == 204
    claims = seen[0].claims
    assert (claims["email"], claims["sub"], claims["aud"]) == (SERVICE_ACCOUNT, "1234567890", AUDIENCE)
    assert post(app).status_code == 401


def test_refused_tokens_are_logged_rate_limited(
    push_app: PushApp, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """40 tokenless pushes to an OIDC endpoint: each answered 401, one WARNING line per reason."""
    app, _ = push_app(PUSH_AUDIENCE=AUDIENCE, PUSH_CERTS_URL=issuer.certs_url)
    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        assert {post(app).status_code for _ in range(40)} == {401}
    assert len([r for r in caplog.records if "rejected (401)" in r.getMessage()]) == 1


def test_oidc_or_emulator_needs_no_if_else_between_local_and_production(push_app: PushApp, issuer: LocalIssuer) -> None:
    """The same settings: with an emulator configured a tokenless push passes (and a bad token is
    still refused); without one, the same push is 401."""
    local, seen = push_app(PUSH_AUTH="oidc_or_emulator", PUSH_AUDIENCE=AUDIENCE, PUSH_CERTS_URL=issuer.certs_url,
                           PUBSUB_EMULATOR_HOST=EMULATOR)
    assert post(local).status_code == 204
    assert post(local, "not.a.token").status_code == 401
    assert post(local, issuer.token(AUDIENCE)).status_code == 204
    production, _ = push_app(PUSH_AUTH="oidc_or_emulator", PUSH_AUDIENCE=AUDIENCE, PUSH_CERTS_URL=issuer.certs_url)
    assert post(production).status_code == 401
    assert len(seen) == 2


def test_platform_mode_accepts_without_a_token_and_warns_once_at_init_app(
    push_app: PushApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind Cloud Run IAM or IAP the app checks no token; init_app says so once, at WARNING."""
    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        app, seen = push_app(PUSH_AUTH="platform")
    warnings = [r for r in caplog.records if "PUSH_AUTH=platform" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert post(app).status_code == 204
    assert post(app).status_code == 204
    assert len(seen) == 2
    assert len([r for r in caplog.records if "PUSH_AUTH=platform" in r.getMessage()]) == 1


def test_unauthenticated_is_refused_at_init_app_without_an_emulator(push_app: PushApp) -> None:
    """PUSH_AUTH=unauthenticated without a Pub/Sub emulator is a ConfigError at init_app, naming the
    modes to use instead — not a surprise when pushes arrive."""
    with pytest.raises(ConfigError, match=r"CLOUDCLIENTS_PUSH_AUTH='unauthenticated'.*oidc_or_emulator"):
        push_app(PUSH_AUTH="unauthenticated")
    app, seen = push_app(PUSH_AUTH="unauthenticated", PUBSUB_EMULATOR_HOST=EMULATOR)
    assert post(app).status_code == 204 and len(seen) == 1


def test_a_custom_verifier_runs_before_the_body_is_read(make_app: MakeApp) -> None:
    """verify= checks a shared token in the query string (as the App Engine samples do): right token
    → handled; wrong token → 401 even with a malformed body; abort(403) inside → 403; a mapping it
    returns becomes message.claims."""
    app = make_app()
    seen: list[ReceivedMessage] = []

    def shared_token(request: Request) -> Any:
        if request.args.get("token") == "forbidden":
            abort(403)
        return {"via": "shared-token"} if request.args.get("token") == "s3cret" else False

    @app.post("/push")
    @push_endpoint(verify=shared_token)
    def push(message: ReceivedMessage) -> None:
        seen.append(message)

    client = app.test_client()
    assert client.post("/push?token=s3cret", json=BODY).status_code == 204
    assert dict(seen[0].claims) == {"via": "shared-token"}
    assert client.post("/push?token=wrong", data=b"not json").status_code == 403
    assert client.post("/push?token=forbidden", json=BODY).status_code == 403
    assert client.post("/push?token=s3cret", data=b"not json").status_code == 400
    assert len(seen) == 1


class _Verdict:
    """Something a verifier should not return."""


@pytest.mark.parametrize(
    ("verdict", "status", "body", "logged"),
    [
        (True, 204, None, None),
        ({"via": "hmac"}, 204, None, None),
        (False, 403, None, None),
        (None, 403, None, None),
        (("Invalid request", 400), 400, "Invalid request", None),
        (Response("no entry", status=401), 401, "no entry", None),
        ("Invalid request", 200, "Invalid request", logging.WARNING),
        (("bad", "tuple", "of", "four"), 403, None, logging.ERROR),
        (1, 403, None, logging.ERROR),
        ([], 403, None, logging.ERROR),
        (_Verdict(), 403, None, logging.ERROR),
    ],
    ids=["true", "claims", "false", "none", "sample-tuple", "response", "str", "bad-tuple", "int", "list", "object"],
)
def test_what_a_verifier_returns_decides_exactly(  # noqa: PLR0917 (pytest passes fixtures and parameters by keyword)
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, verdict: Any, status: int, body: str | None,
    logged: int | None,
) -> None:
    """True or claims accept; False or None refuse with 403; a view-style value (a Response, a
    (body, status) tuple, a str) is the refusal, made by the app as for before_request — Google's
    sample's `return "Invalid request", 400` answers 400 (a 2xx refusal is warned about: Pub/Sub
    acks it); anything else refuses with 403 and an ERROR naming the verifier. The view runs only
    when the push is accepted."""
    app = make_app()
    seen: list[ReceivedMessage] = []

    def check_token(request: Request) -> Any:
        return verdict

    @app.post("/push")
    @push_endpoint(verify=check_token)
    def push(message: ReceivedMessage) -> None:
        seen.append(message)

    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        response = app.test_client().post("/push", json=BODY)
    assert response.status_code == status
    assert len(seen) == (1 if status == 204 else 0)
    if body is not None:
        assert response.get_data(as_text=True) == body
    records = [r for r in caplog.records if "check_token" in r.getMessage()]
    if logged is None:
        assert records == []
    else:
        [record] = records
        assert record.levelno == logged
        assert "Fix: return" in record.getMessage()


def test_a_custom_verifier_and_oidc_together(make_app: MakeApp, issuer: LocalIssuer) -> None:
    """verify= with auth= runs both, the verifier first (App Engine's standard sample checks a
    shared token and the OIDC token): either failing refuses the push; the token's claims reach
    the view."""
    app = make_app(PUSH_AUDIENCE=AUDIENCE, PUSH_CERTS_URL=issuer.certs_url)
    seen: list[ReceivedMessage] = []

    @app.post("/push")
    @push_endpoint(verify=lambda request: request.args.get("token") == "s3cret", auth="oidc")
    def push(message: ReceivedMessage) -> None:
        seen.append(message)

    client = app.test_client()
    good = {"Authorization": f"Bearer {issuer.token(AUDIENCE)}"}
    assert client.post("/push?token=wrong", json=BODY, headers=good).status_code == 403
    assert client.post("/push?token=s3cret", json=BODY).status_code == 401
    assert client.post("/push?token=s3cret", json=BODY, headers=good).status_code == 204
    assert seen[0].claims["aud"] == AUDIENCE and len(seen) == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"auth": "open"}, ValueError),
        ({"verify": "not callable"}, TypeError),
        ({"audience": "has spaces in it"}, ValueError),
        ({"service_account": "not-an-email"}, ValueError),
        ({"unwrapped": "yes"}, TypeError),
    ],
    ids=["unknown-mode", "verify-not-callable", "bad-audience", "bad-account", "unwrapped"],
)
def test_decorator_misuse_fails_at_import(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """A bad push_endpoint() argument raises when the module is imported, not when a push arrives."""
    with pytest.raises(error, match="push_endpoint"):
        push_endpoint(**kwargs)


def test_an_endpoint_that_can_never_accept_is_reported_when_the_app_starts_serving(
    push_app: PushApp, caplog: pytest.LogCaptureFixture,
) -> None:
    """No mode and no audience: the first request the app serves logs an ERROR naming the endpoint
    and the fix, and every push to it answers 500 (Pub/Sub keeps the messages)."""
    app, seen = push_app()
    app.get("/health")(lambda: "ok")
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        assert app.test_client().get("/health").status_code == 200
    [report] = [r for r in caplog.records if "can never accept" in r.getMessage()]
    assert "'push'" in report.getMessage() and "CLOUDCLIENTS_PUSH_AUDIENCE" in report.getMessage()
    response = post(app)
    assert response.status_code == 500 and "CLOUDCLIENTS_PUSH_AUDIENCE" in response.get_json()["detail"]
    assert seen == []


def test_the_decorator_order_mistake_is_caught_with_the_fix(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """@push_endpoint above @app.route leaves the route serving the undecorated view: the app
    reports it on its first request, and the route answers 500 naming the fix instead of a
    TypeError from calling the view without a message."""
    app = make_app(PUSH_AUTH="platform")

    @push_endpoint
    @app.post("/push")
    def push(message: ReceivedMessage) -> None:  # pragma: no cover - never called
        raise AssertionError("the undecorated view must not run")

    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        response = post(app)
        assert all(post(app).status_code == 500 for _ in range(10))
    assert response.status_code == 500
    assert "put @push_endpoint under the route decorator" in response.get_json()["detail"]
    assert any("@push_endpoint is above @app.route" in r.getMessage() for r in caplog.records)
    assert len([r for r in caplog.records if "refused (500)" in r.getMessage()]) == 1  # rate-limited


def test_cli_status_lists_push_problems_and_exits_1(push_app: PushApp, issuer: LocalIssuer) -> None:
    """`flask cloudclients status` shows the push authentication and every endpoint problem, and
    exits with status 1 so that CI or a deploy script can fail on it (0 once it is fixed)."""
    app, _ = push_app()
    result = app.test_cli_runner().invoke(args=["cloudclients", "status"])
    assert result.exit_code == 1, result.output
    assert "push auth: not configured" in result.output
    assert "PROBLEM: push endpoint 'push' can never accept a push" in result.output
    as_json = app.test_cli_runner().invoke(args=["cloudclients", "status", "--json"])
    assert as_json.exit_code == 1 and "can never accept a push" in as_json.output
    fixed, _ = push_app(PUSH_AUDIENCE=AUDIENCE)
    assert fixed.test_cli_runner().invoke(args=["cloudclients", "status"]).exit_code == 0


def _register_push(app: Flask, path: str = "/push", **options: Any) -> None:
    def view(message: ReceivedMessage) -> None:  # pragma: no cover - never pushed to here
        raise AssertionError("not called")

    view.__name__ = path.strip("/").replace("/", "_")
    app.post(path)(push_endpoint(**options)(view) if options else push_endpoint(view))


@pytest.mark.parametrize(
    ("config", "options", "why"),
    [
        ({}, {}, "push authentication is not configured"),
        ({"PUSH_AUTH": "oidc"}, {}, "push authentication 'oidc' needs an audience"),
        ({"PUSH_AUTH": "platform"}, {"auth": "unauthenticated"}, "only allowed against the Pub/Sub emulator"),
    ],
    ids=["no-mode", "oidc-without-audience", "unauthenticated-without-emulator"],
)
def test_init_app_refuses_an_endpoint_registered_before_it_that_can_never_accept(
    make_app: MakeApp, config: dict[str, Any], options: dict[str, Any], why: str
) -> None:
    """Routes registered before init_app are checked by init_app itself: an endpoint that can never
    accept a push is a ConfigError naming the endpoint, why and the fix — not an ERROR line on the
    first push while Pub/Sub retries its 500s."""
    app = make_app(init=False, **config)
    _register_push(app, "/orders", **options)
    with pytest.raises(ConfigError, match=r"push endpoint 'orders' can never accept a push") as info:
        CloudClients(app)
    assert why in str(info.value) and "Fix:" in str(info.value)
    assert "cloudclients" not in app.extensions  # nothing half-registered


def test_init_app_refuses_the_decorator_order_mistake_made_before_it(make_app: MakeApp) -> None:
    """@push_endpoint above @app.route on a route registered before init_app: a ConfigError with the fix."""
    app = make_app(init=False, PUSH_AUTH="platform")

    @push_endpoint
    @app.post("/push")
    def push(message: ReceivedMessage) -> None:  # pragma: no cover - never called
        raise AssertionError("the undecorated view must not run")

    with pytest.raises(ConfigError, match="put @push_endpoint under the route decorator"):
        CloudClients(app)


def test_oidc_without_an_audience_warns_at_init_app_and_each_endpoint_must_bring_one(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture,
) -> None:
    """CLOUDCLIENTS_PUSH_AUTH=oidc and no CLOUDCLIENTS_PUSH_AUDIENCE: init_app says at WARNING that
    every endpoint must pass audience=; an endpoint with its own audience is fine, one without it is
    an error of the endpoint audit."""
    app = make_app(init=False, PUSH_AUTH="oidc")
    _register_push(app, "/orders", audience=AUDIENCE)
    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        CloudClients(app)
    [warning] = [r for r in caplog.records if "without CLOUDCLIENTS_PUSH_AUDIENCE" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "must pass its own audience=" in warning.getMessage()
    _register_push(app, "/invoices")
    status = app.test_cli_runner().invoke(args=["cloudclients", "status"])
    problems = [line.strip() for line in status.output.splitlines() if "PROBLEM" in line]
    assert len(problems) == 1 and "push endpoint 'invoices' can never accept a push" in problems[0], status.output


def test_oidc_or_emulator_without_an_audience_says_tokens_are_not_checked(
    push_app: PushApp, caplog: pytest.LogCaptureFixture
) -> None:
    """oidc_or_emulator against the emulator with no audience anywhere: pushes pass, and a token
    that comes along is not checked (there is nothing to check it against) — init_app says so at
    WARNING, as docs/receiving.md does, instead of promising a verification that never happens."""
    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        app, seen = push_app(PUSH_AUTH="oidc_or_emulator", PUBSUB_EMULATOR_HOST=EMULATOR)
    [warning] = [r for r in caplog.records if "without CLOUDCLIENTS_PUSH_AUDIENCE" in r.getMessage()]
    assert "their tokens are not checked" in warning.getMessage()
    assert post(app).status_code == 204
    assert post(app, "not.a.token").status_code == 204  # the documented behaviour
    assert len(seen) == 2


def test_endpoints_registered_after_init_app_are_reported_by_the_worker_hooks_once(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture,
) -> None:
    """A blueprint registered after init_app (an app factory) is checked when gunicorn's
    post_worker_init / start_subscriptions() run: its problem is logged at ERROR once per process,
    not again on the first request."""
    app = make_app(init=False)
    CloudClients(app)
    _register_push(app, "/late")
    def reports() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "push endpoint 'late' can never accept a push" in r.getMessage()]

    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        cloudclients.gunicorn_post_worker_init(worker=None)
        assert len(reports()) == 1 and reports()[0].levelno == logging.ERROR  # before any request
        cloudclients.start_subscriptions(app)
        app.test_client().get("/nothing")
    assert len(reports()) == 1


def test_a_verifier_alone_replacing_the_apps_oidc_check_is_warned_about(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """verify= alone replaces the app's OIDC check for that endpoint (documented): the audit says
    so at WARNING, naming the endpoint and how to check both."""
    app = make_app(init=False, PUSH_AUDIENCE=AUDIENCE)
    _register_push(app, "/hooks", verify=lambda request: True)
    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        CloudClients(app)
    [warning] = [r for r in caplog.records if "checks only its verify= callable" in r.getMessage()]
    assert "'hooks'" in warning.getMessage() and "CLOUDCLIENTS_PUSH_AUDIENCE" in warning.getMessage()
    assert "auth='oidc'" in warning.getMessage()
