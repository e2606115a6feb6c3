"""Project discovery: no project variable (as on Cloud Run) → init_app asks nobody; the worker
finds it in the credentials or on the metadata server the first time it needs one; short names
then work; with no project anywhere, using a short name fails with a clear error.

The metadata server is a loopback stand-in (tests/metadata.py); each case runs in a fresh
interpreter so that google-auth reads its address."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudclients.testing import TopicHandle
from tests.helpers import wait_for
from tests.metadata import FakeMetadataServer

_SCRIPT = r"""
import json, os, sys
from flask import Flask
import cloudclients
from cloudclients import CloudClients, ConfigError

app = Flask("cloud-run-service")
app.config.update(CLOUDCLIENTS_EXIT_HANDLERS=False, **json.loads(sys.argv[1]))
CloudClients(app)
print("INIT-DONE", flush=True)
input()                                   # the test checks the metadata server saw nothing yet
out = {}
try:
    out["project"] = CloudClients.get_registry(app).project
except ConfigError as exc:
    out["error"] = str(exc)
if len(sys.argv) > 2:                      # publish to a short topic name from a request
    app.post("/publish")(lambda: {"id": cloudclients.publish(sys.argv[2], b"discovered").result(timeout=10)})
    response = app.test_client().post("/publish")
    out["status"] = response.status_code
print(json.dumps(out), flush=True)
"""


@pytest.fixture
def metadata() -> Iterator[FakeMetadataServer]:
    server = FakeMetadataServer()
    yield server
    server.stop()


def _isolated_env(metadata: FakeMetadataServer, tmp_path: Path) -> dict[str, str]:
    """This environment with Google's and the emulators' variables replaced by *metadata*'s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "GCE_"))}
    for key in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):
        env.pop(key, None)
    env.update(metadata.env, CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))  # no developer ADC on this machine
    return env


def run(config: dict[str, str], metadata: FakeMetadataServer, tmp_path: Path, *topic: str) -> dict[str, object]:
    env = _isolated_env(metadata, tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, json.dumps(config), *topic], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "INIT-DONE", proc.stderr.read() if proc.stderr else ""
    assert metadata.paths == [], "init_app must not touch the network (a preload master)"
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_cloud_run_without_a_project_variable_discovers_it_in_the_worker(
    metadata: FakeMetadataServer, tmp_path: Path
) -> None:
    """No CLOUDCLIENTS_PROJECT, no GOOGLE_CLOUD_PROJECT: init_app succeeds without a request; the
    first use asks the metadata server for the project."""
    assert run({}, metadata, tmp_path) == {"project": "cloud-run-project"}
    assert any(p.startswith("/computeMetadata/v1/project/project-id") for p in metadata.paths)


def test_short_names_resolve_against_the_discovered_project(
    metadata: FakeMetadataServer, tmp_path: Path, cloudclients_env: dict[str, str], pubsub_topic: TopicHandle
) -> None:
    """With only a Pub/Sub emulator configured, publish("orders") goes to
    projects/<discovered>/topics/orders."""
    topic = "projects/cloud-run-project/topics/discovered-" + pubsub_topic.topic_id
    subscription = topic.replace("/topics/", "/subscriptions/")
    pubsub_topic.registry.publisher.create_topic(name=topic)
    pubsub_topic.registry.subscriber.create_subscription(request={"name": subscription, "topic": topic})
    config = {"PUBSUB_EMULATOR_HOST": cloudclients_env["PUBSUB_EMULATOR_HOST"]}
    result = run(config, metadata, tmp_path, topic.rsplit("/", 1)[1])
    assert result == {"project": "cloud-run-project", "status": 200}
    from cloudclients.testing import pull_messages

    assert [m.data for m in pull_messages(pubsub_topic.registry, subscription, expected=1)] == [b"discovered"]


def test_a_service_account_file_names_the_project_without_the_metadata_server(
    metadata: FakeMetadataServer, tmp_path: Path
) -> None:
    """CLOUDCLIENTS_CREDENTIALS_FILE with a project_id: that project, and no metadata request."""
    key = tmp_path / "sa.json"
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key.write_text(json.dumps({"type": "service_account", "project_id": "from-key-file",
                               "client_email": "a@from-key-file.iam.gserviceaccount.com",
                               "private_key": pem, "token_uri": "https://oauth2.googleapis.com/token"}))
    assert run({"CLOUDCLIENTS_CREDENTIALS_FILE": str(key)}, metadata, tmp_path) == {"project": "from-key-file"}
    assert metadata.paths == []


def test_no_project_anywhere_fails_at_use_with_the_fix(tmp_path: Path) -> None:
    """Off GCP (the metadata server answers 404) and nothing configured: the first use raises a
    ConfigError saying what to set; a request publishing to a short name answers 500."""
    absent = FakeMetadataServer(project=None)
    try:
        result = run({}, absent, tmp_path, "orders")
    finally:
        absent.stop()
    assert "No Google Cloud project" in str(result["error"]) and "set CLOUDCLIENTS_PROJECT" in str(result["error"])
    assert result["status"] == 500


def test_fully_emulated_apps_never_consult_adc_or_the_metadata_server(
    metadata: FakeMetadataServer, tmp_path: Path
) -> None:
    """With both emulators and no project, discovery is not attempted (a developer's ADC must not
    name the project of a local run): the error says any ID works against the emulators."""
    config = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:9", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
    result = run(config, metadata, tmp_path)
    assert "any ID works against the emulators" in str(result["error"])
    assert metadata.paths == []


_REPEAT_SCRIPT = r"""
import sys
from flask import Flask
from cloudclients import CloudClients, ConfigError

app = Flask("off-gcp")
app.config.update(CLOUDCLIENTS_EXIT_HANDLERS=False)
CloudClients(app)
registry = CloudClients.get_registry(app)

def attempt():
    try:
        return registry.project
    except ConfigError as exc:
        return str(exc)

print("FIRST", attempt(), flush=True)
input()                                   # the test counts the metadata requests so far
for _ in range(20):
    last = attempt()
print("AGAIN", last, flush=True)
"""


def test_a_failed_discovery_is_not_repeated_on_every_use(tmp_path: Path) -> None:
    """Off GCP (the loopback metadata server answers 404): the first use asks the metadata server
    and fails; the next 20 uses right after fail at once without asking again (each one asked
    anew before), saying when it will be asked again."""
    absent = FakeMetadataServer(project=None)
    try:
        proc = subprocess.Popen([sys.executable, "-c", _REPEAT_SCRIPT], env=_isolated_env(absent, tmp_path), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("FIRST No Google Cloud project"), first + (proc.stderr.read() if proc.stderr else "")
        asked = len(absent.paths)
        assert asked > 0
        out, err = proc.communicate("go\n", timeout=60)
        assert proc.returncode == 0, err[-3000:]
    finally:
        absent.stop()
    assert len(absent.paths) == asked, absent.paths
    assert "not asked again for" in out


_RETRY_SCRIPT = r"""
import json, time
from flask import Flask
from cloudclients import CloudClients, ConfigError

app = Flask("flaky-metadata")
app.config.update(CLOUDCLIENTS_EXIT_HANDLERS=False)
CloudClients(app)
registry = CloudClients.get_registry(app)
uses, found, deadline = 0, None, time.monotonic() + 40
while found is None and time.monotonic() < deadline:
    uses += 1                            # a request every 50 ms that needs the project
    try:
        found = registry.project
    except ConfigError:
        time.sleep(0.05)
print(json.dumps({"uses": uses, "found": found}), flush=True)
"""


def _lookups(server: FakeMetadataServer) -> list[float]:
    # Each discovery starts with one request for the server's root (google-auth's "is this GCE?").
    return [t for t, path in server.requests if path.rstrip("/") == ""]


@pytest.mark.slow
def test_discovery_is_retried_later_with_a_growing_wait(tmp_path: Path) -> None:
    """The metadata server answers like off GCP twice, then names the project: a request that
    needs the project every 50 ms asks it once, then again only 2 s later, then only 4 s after
    that — and finds the project then (a metadata server that hiccuped does not leave the worker
    without one). The uses in between ask nothing. Real time, lower bounds only (a loaded machine
    only asks later); the later waits (8, 16 … at most 60 s) would take minutes to watch and are
    not checked here."""
    flaky = FakeMetadataServer(project=None)
    try:
        proc = subprocess.Popen([sys.executable, "-c", _RETRY_SCRIPT], env=_isolated_env(flaky, tmp_path), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: len(_lookups(flaky)) >= 2 or proc.poll() is not None, 30, interval=0.02)
            flaky.project = "late-project"   # the third discovery finds it
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, err[-3000:]
    finally:
        flaky.stop()
    result = json.loads(out.strip().splitlines()[-1])
    lookups = _lookups(flaky)
    assert result["found"] == "late-project", (result, flaky.paths)
    assert len(lookups) == 3, (result, flaky.paths)
    waits = [later - earlier for earlier, later in itertools.pairwise(lookups)]
    assert waits[0] > 1.5 and waits[1] > 3.5, waits  # 2 s, then 4 s (less the server's own jitter)
    assert result["uses"] > 20, result  # each wait was lived through by uses that asked nothing
