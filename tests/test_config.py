"""Settings are read once at init_app, validated with messages naming key, value and fix."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cloudclients import CloudClients, ConfigError, Settings

P = "CLOUDCLIENTS_"
OK = {P + "PROJECT": "my-project-1"}

INVALID: list[tuple[str, dict[str, Any], dict[str, str], str, str]] = [
    # (id, config, environ, key expected in message, value expected in message)
    ("project-uppercase", {P + "PROJECT": "My Project"}, {}, P + "PROJECT", "'My Project'"),
    ("project-number", {P + "PROJECT": 123456789}, {}, P + "PROJECT", "123456789"),
    ("env-project-bad", {}, {"GOOGLE_CLOUD_PROJECT": "x"}, "GOOGLE_CLOUD_PROJECT", "'x'"),
    ("pubsub-host-no-port", {**OK, P + "PUBSUB_EMULATOR_HOST": "localhost"}, {},
     P + "PUBSUB_EMULATOR_HOST", "'localhost'"),
    ("pubsub-host-scheme", {**OK, P + "PUBSUB_EMULATOR_HOST": "http://localhost:8085"}, {},
     P + "PUBSUB_EMULATOR_HOST", "'http://localhost:8085'"),
    ("pubsub-host-bad-port", {**OK, P + "PUBSUB_EMULATOR_HOST": "localhost:99999"}, {},
     P + "PUBSUB_EMULATOR_HOST", "'localhost:99999'"),
    ("env-pubsub-host-no-port", OK, {"PUBSUB_EMULATOR_HOST": "emulator"}, "PUBSUB_EMULATOR_HOST", "'emulator'"),
    ("storage-no-scheme", {**OK, P + "STORAGE_EMULATOR_HOST": "localhost:9023"}, {},
     P + "STORAGE_EMULATOR_HOST", "'localhost:9023'"),
    ("env-storage-no-scheme", OK, {"STORAGE_EMULATOR_HOST": "127.0.0.1:9023"},
     "STORAGE_EMULATOR_HOST", "'127.0.0.1:9023'"),
    ("storage-ftp", {**OK, P + "STORAGE_EMULATOR_HOST": "ftp://h:1"}, {}, P + "STORAGE_EMULATOR_HOST", "'ftp://h:1'"),
    ("timeout-negative", {**OK, P + "PUBLISH_TIMEOUT": -1}, {}, P + "PUBLISH_TIMEOUT", "-1"),
    ("timeout-zero", {**OK, P + "PUBLISH_TIMEOUT": 0}, {}, P + "PUBLISH_TIMEOUT", "0"),
    ("timeout-text", {**OK, P + "PUBLISH_TIMEOUT": "soon"}, {}, P + "PUBLISH_TIMEOUT", "'soon'"),
    ("timeout-nan", {**OK, P + "PUBLISH_TIMEOUT": float("nan")}, {}, P + "PUBLISH_TIMEOUT", "nan"),
    ("timeout-bool", {**OK, P + "PUBLISH_TIMEOUT": True}, {}, P + "PUBLISH_TIMEOUT", "True"),
    ("batch-messages-over-limit", {**OK, P + "BATCH_MAX_MESSAGES": 1001}, {}, P + "BATCH_MAX_MESSAGES", "1001"),
    ("batch-messages-zero", {**OK, P + "BATCH_MAX_MESSAGES": 0}, {}, P + "BATCH_MAX_MESSAGES", "0"),
    ("batch-bytes-over-limit", {**OK, P + "BATCH_MAX_BYTES": 10_000_001}, {}, P + "BATCH_MAX_BYTES", "10000001"),
    ("batch-messages-float", {**OK, P + "BATCH_MAX_MESSAGES": 1.5}, {}, P + "BATCH_MAX_MESSAGES", "1.5"),
    ("batch-latency-negative", {**OK, P + "BATCH_MAX_LATENCY": -0.5}, {}, P + "BATCH_MAX_LATENCY", "-0.5"),
    ("pool-size-zero", {**OK, P + "STORAGE_POOL_SIZE": 0}, {}, P + "STORAGE_POOL_SIZE", "0"),
    ("pool-size-text", {**OK, P + "STORAGE_POOL_SIZE": "many"}, {}, P + "STORAGE_POOL_SIZE", "'many'"),
    ("ordering-not-bool", {**OK, P + "ENABLE_MESSAGE_ORDERING": "maybe"}, {}, P + "ENABLE_MESSAGE_ORDERING", "'maybe'"),
    ("latency-too-long", {**OK, P + "BATCH_MAX_LATENCY": "61"}, {}, P + "BATCH_MAX_LATENCY", "'61'"),
    ("unknown-key-typo", {**OK, P + "PUBLISH_TIMOUT": 5}, {}, P + "PUBLISH_TIMOUT", "5"),
    ("credentials-missing", {**OK, P + "CREDENTIALS_FILE": "/nonexistent/key.json"}, {},
     P + "CREDENTIALS_FILE", "'/nonexistent/key.json'"),
    ("env-credentials-missing", OK, {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/adc.json"},
     "GOOGLE_APPLICATION_CREDENTIALS", "'/nonexistent/adc.json'"),
    ("production-with-emulator", {**OK, P + "PRODUCTION": True, P + "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}, {},
     P + "PUBSUB_EMULATOR_HOST", "'127.0.0.1:8085'"),
    ("production-with-env-emulator", {**OK, P + "PRODUCTION": "true"}, {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"},
     "STORAGE_EMULATOR_HOST", "'http://127.0.0.1:9'"),
    ("confirm-typo", {**OK, P + "PUBLISH_CONFIRM": "before-response"}, {}, P + "PUBLISH_CONFIRM", "'before-response'"),
    ("confirm-bool", {**OK, P + "PUBLISH_CONFIRM": True}, {}, P + "PUBLISH_CONFIRM", "True"),
    ("shutdown-timeout-negative", {**OK, P + "SHUTDOWN_TIMEOUT": -1}, {}, P + "SHUTDOWN_TIMEOUT", "-1"),
    ("exit-handlers-not-bool", {**OK, P + "EXIT_HANDLERS": "sometimes"}, {}, P + "EXIT_HANDLERS", "'sometimes'"),
]


@pytest.mark.parametrize(("config", "environ", "key", "value"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_setting_is_refused_naming_key_and_value(
    config: dict[str, Any], environ: dict[str, str], key: str, value: str
) -> None:
    """Each invalid value raises ConfigError (a ValueError) naming the key, the value and a fix."""
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(config, environ)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert key in message
    assert value in message
    assert "Fix:" in message


def test_init_app_fails_early_on_bad_config() -> None:
    """A bad value is refused by init_app itself, before any request."""
    app = Flask(__name__)
    app.config.update({**OK, P + "PUBLISH_TIMEOUT": "-3"})
    with pytest.raises(ConfigError, match="CLOUDCLIENTS_PUBLISH_TIMEOUT='-3'"):
        CloudClients(app)
    assert "cloudclients" not in app.extensions


def test_typo_suggests_the_known_key() -> None:
    """An unknown CLOUDCLIENTS_ key names the closest real one."""
    with pytest.raises(ConfigError, match="did you mean CLOUDCLIENTS_PUBLISH_TIMEOUT"):
        Settings.from_mapping({**OK, P + "PUBLISH_TIMOUT": 5}, {})


def test_defaults_and_environment_fallbacks() -> None:
    """Unset keys fall back to the standard environment variables, then to defaults."""
    s = Settings.from_mapping(
        {},
        {"GOOGLE_CLOUD_PROJECT": "env-project", "PUBSUB_EMULATOR_HOST": "localhost:8085",
         "STORAGE_EMULATOR_HOST": "http://localhost:9023/"},
    )
    assert s.project == "env-project"
    assert s.pubsub_emulator_host == "localhost:8085"
    assert s.storage_emulator_host == "http://localhost:9023"
    assert (s.publish_timeout, s.batch_max_messages, s.storage_pool_size, s.storage_timeout) == (10.0, 100, 32, 10.0)
    assert s.pubsub_emulator and s.storage_emulator and not s.production


def test_app_config_wins_over_environment() -> None:
    """A CLOUDCLIENTS_ key in app.config takes precedence over its environment fallback."""
    s = Settings.from_mapping(
        {P + "PROJECT": "config-project", P + "PUBSUB_EMULATOR_HOST": "[::1]:8085"},
        {"GOOGLE_CLOUD_PROJECT": "env-project", "PUBSUB_EMULATOR_HOST": "other:1"},
    )
    assert (s.project, s.pubsub_emulator_host) == ("config-project", "[::1]:8085")


def test_string_values_are_parsed() -> None:
    """Values that arrive as strings (from env files) are parsed to their types."""
    s = Settings.from_mapping(
        {**OK, P + "PUBLISH_TIMEOUT": "2.5", P + "BATCH_MAX_MESSAGES": "50",
         P + "ENABLE_MESSAGE_ORDERING": "yes", P + "PRODUCTION": "0"},
        {},
    )
    assert (s.publish_timeout, s.batch_max_messages, s.enable_message_ordering, s.production) == (
        2.5, 50, True, False)


def test_settings_are_frozen() -> None:
    """Settings cannot change after init_app."""
    s = Settings.from_mapping(OK, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.project = "other"  # type: ignore[misc]


def test_credentials_file_contents_never_in_message(tmp_path: Path) -> None:
    """A broken key file is reported by path; none of its contents reach the message."""
    secret = "-----BEGIN PRIVATE KEY-----\nMIIEvSECRETSECRET\n"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"type": "service_account", "private_key": "' + secret)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"type": "service_account", "private_key": secret}))
    for path in (bad_json, incomplete):
        with pytest.raises(ConfigError) as info:
            Settings.from_mapping({**OK, P + "CREDENTIALS_FILE": str(path)}, {})
        assert str(path) in str(info.value)
        assert "SECRET" not in str(info.value) and "PRIVATE KEY" not in str(info.value)


def test_ambient_adc_file_ignored_when_everything_is_emulated() -> None:
    """With both emulators configured, a stale GOOGLE_APPLICATION_CREDENTIALS does not break startup."""
    s = Settings.from_mapping(
        {**OK, P + "PUBSUB_EMULATOR_HOST": "localhost:1", P + "STORAGE_EMULATOR_HOST": "http://localhost:2"},
        {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent.json"},
    )
    assert s.credentials_file is None


def test_an_ambient_adc_file_is_still_checked_when_only_one_client_is_emulated() -> None:
    """Only with both emulators is the environment's credentials file left unread."""
    with pytest.raises(ConfigError, match=r"GOOGLE_APPLICATION_CREDENTIALS='/nonexistent\.json'"):
        Settings.from_mapping({**OK, P + "PUBSUB_EMULATOR_HOST": "localhost:1"},
                              {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent.json"})


def _table_rows() -> dict[str, tuple[str, str]]:
    """``{field name: (default cell, rule cell)}`` of the README's configuration table."""
    rows = {}
    for line in Settings.table().splitlines()[2:]:
        key, _env, default, rule = (cell.strip() for cell in line.strip("|").split(" | "))
        rows[key.strip("`").removeprefix(P).lower()] = (default, rule)
    return rows


def test_the_table_shows_each_settings_real_default() -> None:
    """Each default in the table is the field's default: 'unset' for None, else a value that
    reads back (through the setting's own parser) as the default."""
    defaults = Settings()
    rows = _table_rows()
    assert set(rows) == {f.name for f in dataclasses.fields(Settings)}
    for name, (shown, _rule) in rows.items():
        if shown.startswith("unset"):
            assert getattr(defaults, name) is None, name
        else:
            literal = shown.split("`")[1]
            read = Settings.from_mapping({**OK, P + name.upper(): literal}, {})
            assert getattr(read, name) == getattr(defaults, name), (name, shown)


BOUNDS = re.compile(r"(?P<seconds>seconds, )?(?:> (?P<open>[\d.]+) and ≤ (?P<high_o>[\d.,]+)"
                    r"|(?P<low>[\d.,]+)–(?P<high>[\d.,]+))")


@pytest.mark.parametrize("name", [n for n, (_, rule) in _table_rows().items() if BOUNDS.match(rule)])
def test_the_range_in_the_table_is_the_range_accepted(name: str) -> None:
    """The bounds the table states are the ones the parser checks: the ends of the range are
    accepted (an open end is not), the values just outside are refused with a fix naming them."""
    match = BOUNDS.match(_table_rows()[name][1])
    assert match is not None
    number = float if match["seconds"] else int
    ends = (match["open"] or match["low"], match["high_o"] or match["high"])
    low_text, high_text = (end.replace(",", "") for end in ends)
    low, high = number(low_text), number(high_text)
    step = 0.001 if number is float else 1
    key = P + name.upper()
    accepted = [high] if match["open"] else [low, high]
    for value in accepted:
        assert getattr(Settings.from_mapping({**OK, key: value}, {}), name) == value
    for value in ([low] if match["open"] else [low - step]) + [high + step]:
        with pytest.raises(ConfigError, match=rf"Fix: .*\b{low_text}\b.*\b{high_text}\b"):
            Settings.from_mapping({**OK, key: value}, {})
