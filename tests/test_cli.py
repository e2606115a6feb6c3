"""`flask cloudclients …` through Flask's CLI runner against the emulators: status (secrets
redacted), idempotent create-topic / create-subscription / create-bucket, and publish."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from cloudclients import ClientRegistry, CloudClients
from cloudclients.testing import TEST_PROJECT, EmulatorProcess, pull_messages

PLANTED_KEY = "-----BEGIN PRIVATE KEY-----\nPLANTED-CLI-KEY-0f9e8d\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def app(pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess, tmp_path: Path) -> Iterator[Flask]:
    """An app on the emulators with a (planted) credentials file configured."""
    key_file = tmp_path / "secret-dir" / "sa-key.json"
    key_file.parent.mkdir()
    key_file.write_text(json.dumps({
        "type": "service_account", "client_email": "cli@cloudclients-test.iam.gserviceaccount.com",
        "private_key": PLANTED_KEY, "token_uri": "http://127.0.0.1:1/token",
    }))
    app = Flask("cli-test")
    app.config.update({
        "CLOUDCLIENTS_PROJECT": TEST_PROJECT, "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "CLOUDCLIENTS_STORAGE_EMULATOR_HOST": storage_emulator.host, "CLOUDCLIENTS_CREDENTIALS_FILE": str(key_file),
        "CLOUDCLIENTS_EXIT_HANDLERS": False, "CLOUDCLIENTS_PUBLISH_TIMEOUT": 10,
    })
    CloudClients(app)
    yield app
    CloudClients.get_registry(app).close(timeout=5)


@pytest.fixture
def run(app: Flask) -> Callable[..., tuple[int, str]]:
    runner: FlaskCliRunner = app.test_cli_runner()

    def invoke(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
        result = runner.invoke(args=["cloudclients", *args], input=stdin)
        return result.exit_code, result.output

    return invoke


def test_status_shows_mode_settings_and_clients_without_secrets(run: Callable[..., tuple[int, str]]) -> None:
    """status names the project, emulator hosts, push auth and the clients alive here; the
    credentials file appears as its basename only and its key never."""
    code, out = run("status")
    assert code == 0, out
    assert f"project {TEST_PROJECT}" in out
    assert "Pub/Sub:   emulator at 127.0.0.1:" in out and "Storage:   emulator at http://127.0.0.1:" in out
    assert "publisher   not built" in out
    assert "push auth: not configured" in out
    assert "credentials_file = '…/sa-key.json'" in out
    assert "PLANTED-CLI-KEY" not in out and "secret-dir" not in out


def test_status_json_reports_clients_alive_in_this_process(
    app: Flask, run: Callable[..., tuple[int, str]]
) -> None:
    """status --json is one JSON object; a client built in this process shows as alive."""
    CloudClients.get_registry(app).get("storage")
    code, out = run("status", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["registry"]["clients"]["storage"]["alive"] is True
    assert report["registry"]["clients"]["publisher"]["alive"] is False
    assert report["pubsub"].startswith("emulator at") and report["settings"]["project"] == TEST_PROJECT
    assert "PLANTED-CLI-KEY" not in out


def test_create_topic_is_idempotent(
    run: Callable[..., tuple[int, str]], emulator_registry: ClientRegistry, unique_name: Callable[[str], str]
) -> None:
    """create-topic creates, then reports 'exists' with status 0; the topic is really there."""
    name = unique_name("cli-topic")
    path = f"projects/{TEST_PROJECT}/topics/{name}"
    assert run("create-topic", name) == (0, f"created {path}\n")
    assert run("create-topic", path) == (0, f"exists {path}\n")
    assert emulator_registry.publisher.get_topic(topic=path).name == path


def test_create_subscription_is_idempotent_and_refuses_a_different_one(
    run: Callable[..., tuple[int, str]], emulator_registry: ClientRegistry, unique_name: Callable[[str], str]
) -> None:
    """create-subscription creates, reports 'exists' for the same topic, and fails (status 1,
    naming the difference) when the existing one is on another topic."""
    topic, other, sub = unique_name("t"), unique_name("t2"), unique_name("s")
    run("create-topic", topic)
    run("create-topic", other)
    sub_path = f"projects/{TEST_PROJECT}/subscriptions/{sub}"
    assert run("create-subscription", sub, "--topic", topic, "--ack-deadline", "30") == (0, f"created {sub_path}\n")
    assert run("create-subscription", sub, "--topic", topic) == (0, f"exists {sub_path}\n")
    code, out = run("create-subscription", sub, "--topic", other)
    assert code == 1
    assert f"its topic is projects/{TEST_PROJECT}/topics/{topic}" in out and "Fix:" in out
    got = emulator_registry.subscriber.get_subscription(subscription=sub_path)
    assert got.ack_deadline_seconds == 30


def test_create_push_subscription(
    run: Callable[..., tuple[int, str]], emulator_registry: ClientRegistry, unique_name: Callable[[str], str]
) -> None:
    """--push-endpoint with a service account creates a push subscription with an OIDC token config."""
    topic, sub = unique_name("t"), unique_name("s")
    run("create-topic", topic)
    code, out = run("create-subscription", sub, "--topic", topic, "--push-endpoint", "http://127.0.0.1:9/push",
                    "--push-service-account", "push@cloudclients-test.iam.gserviceaccount.com")
    assert code == 0, out
    got = emulator_registry.subscriber.get_subscription(subscription=f"projects/{TEST_PROJECT}/subscriptions/{sub}")
    assert got.push_config.push_endpoint == "http://127.0.0.1:9/push"
    assert got.push_config.oidc_token.audience == "http://127.0.0.1:9/push"
    code, out = run("create-subscription", sub, "--topic", topic)  # same name, now pull
    assert code == 1 and "push endpoint is http://127.0.0.1:9/push" in out


def test_create_bucket_is_idempotent(
    run: Callable[..., tuple[int, str]], emulator_registry: ClientRegistry, unique_name: Callable[[str], str]
) -> None:
    """create-bucket creates, then reports 'exists'; the bucket is there."""
    bucket = unique_name("b")[:60]
    assert run("create-bucket", bucket) == (0, f"created gs://{bucket}\n")
    assert run("create-bucket", bucket) == (0, f"exists gs://{bucket}\n")
    assert emulator_registry.storage.get_bucket(bucket).name == bucket


def test_publish_with_attributes_and_stdin(
    run: Callable[..., tuple[int, str]], emulator_registry: ClientRegistry, unique_name: Callable[[str], str]
) -> None:
    """publish prints the confirmed message ID; data and --attr k=v arrive; '-' reads stdin."""
    topic, sub = unique_name("t"), unique_name("s")
    run("create-topic", topic)
    run("create-subscription", sub, "--topic", topic)
    code, out = run("publish", topic, '{"id": 1}', "--attr", "kind=created", "--attr", "source=cli")
    assert code == 0, out
    message_id = out.strip()
    code, out2 = run("publish", topic, "-", stdin=b"from stdin")
    assert code == 0, out2
    messages = pull_messages(emulator_registry, f"projects/{TEST_PROJECT}/subscriptions/{sub}", expected=2)
    by_data = {m.data: m for m in messages}
    assert by_data[b'{"id": 1}'].message_id == message_id
    assert dict(by_data[b'{"id": 1}'].attributes) == {"kind": "created", "source": "cli"}
    assert b"from stdin" in by_data


def test_publish_errors_are_one_line(run: Callable[..., tuple[int, str]], unique_name: Callable[[str], str]) -> None:
    """A malformed --attr is a usage error (2); a missing topic fails with status 1 and the service's reason."""
    code, out = run("publish", "t", "x", "--attr", "novalue")
    assert code == 2 and "'novalue' is not KEY=VALUE" in out
    code, out = run("publish", unique_name("missing"), "x")
    assert code == 1
    assert out.startswith(f"Error: publishing to projects/{TEST_PROJECT}/topics/missing-")
    assert "failed: 404" in out and out.count("\n") == 1
    code, out = run("create-topic", "projects/x/buckets/y")
    assert code == 2 and "not a topic name" in out
