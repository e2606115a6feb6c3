"""The push helpers of cloudclients.testing, in-process and fast: push_envelope() is the service's
envelope, PushTokenIssuer / sign_push_token() sign tokens an app verifies against certificates served
on loopback, and docs/testing.md's signed-push recipe runs as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cloudclients import CloudClients, ReceivedMessage, push_endpoint
from cloudclients.testing import PushTokenIssuer, default_push_token_issuer, push_envelope, sign_push_token

ROOT = Path(__file__).resolve().parent.parent


def test_push_envelope_is_what_push_endpoint_reads() -> None:
    """push_envelope() builds the service's shape: an endpoint reads back data, attributes, ID,
    publish time, ordering key, delivery attempt and subscription."""
    app = Flask(__name__)
    app.config.update(CLOUDCLIENTS_PROJECT="cloudclients-test", CLOUDCLIENTS_PUSH_AUTH="platform",
                      CLOUDCLIENTS_EXIT_HANDLERS=False)
    CloudClients(app)
    seen: list[ReceivedMessage] = []
    app.post("/push")(push_endpoint(seen.append))
    body = push_envelope("héllo", {"kind": "created"}, message_id="7", ordering_key="k", delivery_attempt=2,
                         subscription="projects/p/subscriptions/s")
    assert body["message"]["messageId"] == body["message"]["message_id"] == "7"
    assert app.test_client().post("/push", json=body).status_code == 204
    [message] = seen
    assert (message.text, dict(message.attributes), message.message_id) == ("héllo", {"kind": "created"}, "7")
    assert (message.ordering_key, message.delivery_attempt) == ("k", 2)
    assert message.subscription == "projects/p/subscriptions/s"
    assert message.publish_time is not None


def test_push_envelope_always_carries_attributes() -> None:
    """Like the service (and the emulator), the envelope has "attributes" even when there are none."""
    assert push_envelope(b"x")["message"]["attributes"] == {}
    assert push_envelope(b"x", {})["message"]["attributes"] == {}


@pytest.mark.parametrize("which", ["certs_url", "jwks_url"])
def test_push_token_issuer_tokens_verify_with_both_certificate_formats(which: str) -> None:
    """Tokens signed by PushTokenIssuer verify against its v1 (PEM map) and v3 (JWKS) URLs; a
    token for another audience is refused with 403."""
    with PushTokenIssuer() as issuer:
        app = Flask(__name__)
        app.config.update(CLOUDCLIENTS_PROJECT="cloudclients-test", CLOUDCLIENTS_EXIT_HANDLERS=False,
                          CLOUDCLIENTS_PUSH_AUDIENCE="https://app.example/push",
                          CLOUDCLIENTS_PUSH_CERTS_URL=getattr(issuer, which))
        CloudClients(app)
        seen: list[ReceivedMessage] = []
        app.post("/push")(push_endpoint(seen.append))
        client = app.test_client()

        def post(token: str) -> Any:
            return client.post("/push", json=push_envelope(b"x"), headers={"Authorization": f"Bearer {token}"})

        assert post(issuer.sign_push_token("https://app.example/push", email="me@p.iam.gserviceaccount.com")
                    ).status_code == 204
        assert seen[0].claims["email"] == "me@p.iam.gserviceaccount.com"
        assert post(issuer.sign_push_token("https://elsewhere/push")).status_code == 403
        assert post(issuer.sign_push_token("https://app.example/push", exp=None)).status_code == 401


def test_sign_push_token_signs_with_the_default_issuer() -> None:
    """The module-level sign_push_token() signs with default_push_token_issuer(), whose certificates
    an app verifies against; the fixture is that same issuer, and issuer= picks another."""
    app = Flask(__name__)
    app.config.update(CLOUDCLIENTS_PROJECT="cloudclients-test", CLOUDCLIENTS_EXIT_HANDLERS=False,
                      CLOUDCLIENTS_PUSH_AUDIENCE="https://app.example/push",
                      CLOUDCLIENTS_PUSH_CERTS_URL=default_push_token_issuer().certs_url)
    CloudClients(app)
    seen: list[ReceivedMessage] = []
    app.post("/push")(push_endpoint(seen.append))

    def post(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return int(app.test_client().post("/push", json=push_envelope(b"x"), headers=headers).status_code)

    assert post(sign_push_token("https://app.example/push", email="ci@p.iam.gserviceaccount.com")) == 204
    assert seen[0].claims["email"] == "ci@p.iam.gserviceaccount.com"
    assert post(sign_push_token("https://app.example/push", lifetime=-120)) == 401   # expired
    with PushTokenIssuer() as stranger:
        assert post(sign_push_token("https://app.example/push", issuer=stranger)) == 401
    assert default_push_token_issuer() is default_push_token_issuer()


def test_the_testing_docs_signed_push_recipe_runs_as_written() -> None:
    """docs/testing.md's recipe for signed pushes (sign_push_token, no emulator) runs as written."""
    docs = (ROOT / "docs" / "testing.md").read_text()
    section = docs.split("### Recipe: a signed push without the emulator", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {"__name__": "recipe"}
    exec(compile(code.group(1), "docs/testing.md", "exec"), namespace)
    namespace["test_signed_push"]()
