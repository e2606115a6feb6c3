"""Settings of the receiving side and operations (push authentication, health timeout):
each bad value is refused at init_app naming key, value and fix, like tests/test_config.py."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from cloudclients import CloudClients, ConfigError, Settings

P = "CLOUDCLIENTS_"
OK = {P + "PROJECT": "my-project-1"}
EMULATOR = {**OK, P + "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}
AUD = {**OK, P + "PUSH_AUDIENCE": "https://app.example.com/push"}

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, config, key expected in message, value expected in message)
    ("account-without-audience", {**OK, P + "PUSH_SERVICE_ACCOUNT": "a@b.iam.gserviceaccount.com"},
     P + "PUSH_SERVICE_ACCOUNT", "'a@b.iam.gserviceaccount.com'"),
    ("audience-with-space", {**OK, P + "PUSH_AUDIENCE": "https://a b"}, P + "PUSH_AUDIENCE", "'https://a b'"),
    ("audience-not-string", {**OK, P + "PUSH_AUDIENCE": 42}, P + "PUSH_AUDIENCE", "42"),
    ("audience-list", {**OK, P + "PUSH_AUDIENCE": ["https://a"]}, P + "PUSH_AUDIENCE", "['https://a']"),
    ("account-not-email", {**AUD, P + "PUSH_SERVICE_ACCOUNT": "push-invoker"}, P + "PUSH_SERVICE_ACCOUNT",
     "'push-invoker'"),
    ("unauthenticated-without-emulator", {**OK, P + "PUSH_AUTH": "unauthenticated"},
     P + "PUSH_AUTH", "'unauthenticated'"),
    ("auth-mode-typo", {**EMULATOR, P + "PUSH_AUTH": "odic"}, P + "PUSH_AUTH", "'odic'"),
    ("auth-mode-not-string", {**EMULATOR, P + "PUSH_AUTH": True}, P + "PUSH_AUTH", "True"),
    ("account-with-platform",
     {**OK, P + "PUSH_AUTH": "platform", P + "PUSH_SERVICE_ACCOUNT": "a@b.iam.gserviceaccount.com"},
     P + "PUSH_SERVICE_ACCOUNT", "'a@b.iam.gserviceaccount.com'"),
    ("certs-url-plain-http-remote", {**OK, P + "PUSH_CERTS_URL": "http://certs.example.com/certs"},
     P + "PUSH_CERTS_URL", "'http://certs.example.com/certs'"),
    ("certs-url-no-scheme", {**OK, P + "PUSH_CERTS_URL": "www.googleapis.com/oauth2/v1/certs"},
     P + "PUSH_CERTS_URL", "'www.googleapis.com/oauth2/v1/certs'"),
    ("certs-url-not-string", {**OK, P + "PUSH_CERTS_URL": 3}, P + "PUSH_CERTS_URL", "3"),
    ("health-timeout-zero", {**OK, P + "HEALTH_TIMEOUT": 0}, P + "HEALTH_TIMEOUT", "0"),
    ("health-timeout-too-long", {**OK, P + "HEALTH_TIMEOUT": "31"}, P + "HEALTH_TIMEOUT", "'31'"),
    ("health-timeout-text", {**OK, P + "HEALTH_TIMEOUT": "fast"}, P + "HEALTH_TIMEOUT", "'fast'"),
    ("typo", {**OK, P + "PUSH_AUDIENSE": "https://a"}, P + "PUSH_AUDIENSE", "did you mean CLOUDCLIENTS_PUSH_AUDIENCE"),
]


@pytest.mark.parametrize(("config", "key", "value"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_receiving_setting_is_refused_at_init_app(config: dict[str, Any], key: str, value: str) -> None:
    """Each invalid value makes init_app raise ConfigError naming the key, the value and a fix."""
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigError) as info:
        CloudClients(app)
    message = str(info.value)
    assert key in message and value in message and "Fix:" in message
    assert "cloudclients" not in app.extensions


def test_receiving_defaults() -> None:
    """Unset: no mode, no audience, no account, Google's certificates, 2 s health checks; an
    audience alone means OIDC."""
    s = Settings.from_mapping(OK, {})
    assert s.push_auth is None and s.push_audience is None and s.push_service_account is None
    assert s.push_certs_url == "https://www.googleapis.com/oauth2/v1/certs"
    assert s.health_timeout == 2.0
    assert Settings.from_mapping(AUD, {}).push_auth == "oidc"


def test_receiving_values_are_parsed() -> None:
    """Valid values, including strings from env files and a loopback http certs URL for tests."""
    s = Settings.from_mapping(
        {**EMULATOR, P + "PUSH_AUDIENCE": "https://app.example.com/push",
         P + "PUSH_SERVICE_ACCOUNT": "push@my-project-1.iam.gserviceaccount.com",
         P + "PUSH_AUTH": " OIDC_or_emulator\n", P + "PUSH_CERTS_URL": "http://127.0.0.1:9999/certs",
         P + "HEALTH_TIMEOUT": "0.5"},
        {},
    )
    assert (s.push_audience, s.push_service_account) == (
        "https://app.example.com/push", "push@my-project-1.iam.gserviceaccount.com")
    assert s.push_auth == "oidc_or_emulator"
    assert (s.push_certs_url, s.health_timeout) == ("http://127.0.0.1:9999/certs", 0.5)


def test_unauthenticated_accepts_the_emulator_from_the_environment() -> None:
    """PUBSUB_EMULATOR_HOST from the environment counts as emulator mode for PUSH_AUTH=unauthenticated."""
    s = Settings.from_mapping({**OK, P + "PUSH_AUTH": "unauthenticated"}, {"PUBSUB_EMULATOR_HOST": "localhost:8085"})
    assert s.push_auth == "unauthenticated"
