"""The pytest plugin as a user's project meets it, each project in a pytest run of its own: a
sample-style app created at import time (and a factory app) tested with only the two ini lines; one
clear line when an emulator cannot start or an option is wrong; nothing left behind; no way to reach
production by accident, and the real environment back when a test asks for it; isolation between
tests; pytest-xdist. (The push helpers and topology rules: test_testing_push.py, test_testing_topology.py.)"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudclients.testing import start_emulators
from tests.sample_project import INI, errors, header, output, run_pytest, write_project

pytestmark = pytest.mark.slow  # every test here starts processes

TOPOLOGY = {"topics": [{"name": "orders", "subscriptions": [{"name": "orders-audit", "ackDeadlineSeconds": 20}]}],
            "buckets": ["receipts"]}

# A Google-sample-shaped app: created at import, settings from the environment only.
MAIN = '''
import os
from flask import Flask, request
import cloudclients
from cloudclients import CloudClients, get_storage

app = Flask(__name__)
CloudClients(app)
EMULATOR_AT_IMPORT = os.environ.get("PUBSUB_EMULATOR_HOST")


@app.post("/orders")
def order():
    body = request.get_data()
    message_id = cloudclients.publish("orders", body).result(timeout=10)
    get_storage().bucket("receipts").blob(message_id).upload_from_string(body)
    return {"id": message_id}
'''

TEST_MAIN = '''
import os
import main                                    # at the top, as the samples do
from google.cloud import pubsub_v1, storage
from google.auth.credentials import AnonymousCredentials

PROJECT = os.environ["GOOGLE_CLOUD_PROJECT"]   # exported by the plugin (or the developer's own)


def test_the_app_saw_the_emulator_when_it_was_imported():
    assert main.EMULATOR_AT_IMPORT


def test_an_order_is_published_and_stored():
    response = main.app.test_client().post("/orders", data=b"book")
    assert response.status_code == 200, response.get_data(as_text=True)
    message_id = response.get_json()["id"]
    subscriber = pubsub_v1.SubscriberClient()      # the stock client, from PUBSUB_EMULATOR_HOST
    pulled = subscriber.pull(subscription=f"projects/{PROJECT}/subscriptions/orders-audit",
                             max_messages=10, timeout=10)
    assert [m.message.data for m in pulled.received_messages] == [b"book"]
    blob = storage.Client(credentials=AnonymousCredentials(), project=PROJECT).bucket("receipts").blob(message_id)
    assert blob.download_as_bytes() == b"book"
'''

def service_account_file(path: Path, project: str = "real-looking-project") -> Path:
    """A service-account key file google.auth.default() loads without the network (a throwaway key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "k1", "private_key": pem,
        "client_email": f"ci@{project}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "http://127.0.0.1:1/token",
    }))
    return path


# -- the two ini lines ---------------------------------------------------------------------------


def test_an_app_created_at_import_is_tested_with_two_ini_lines(tmp_path: Path) -> None:
    """A sample-style project — `import main` at the top of its test module, no conftest, no
    fixtures — passes against both emulators with only the two ini lines and a topology file."""
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY), "main.py": MAIN,
                             "test_main.py": TEST_MAIN})
    started = time.monotonic()
    done = run_pytest(tmp_path, "-s")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, output(done)
    assert "2 passed" in done.stdout
    print(f"\n{header(done, 'cloudclients: emulators')}; whole run {elapsed:.1f} s")


def test_a_conftest_that_imports_the_app(tmp_path: Path) -> None:
    """A conftest.py that imports the app at its top (and builds a fixture on it) already sees the
    emulators: the plugin starts them before the first conftest is imported."""
    conftest = '''
    import pytest
    import main

    @pytest.fixture
    def client():
        return main.app.test_client()
    '''
    tests = '''
    import main

    def test_order(client):
        assert main.EMULATOR_AT_IMPORT
        assert client.post("/orders", data=b"pen").status_code == 200
    '''
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY), "main.py": MAIN,
                             "conftest.py": conftest, "test_conf.py": tests})
    done = run_pytest(tmp_path)
    assert done.returncode == 0, output(done)


def test_the_developers_project_is_kept_and_used_everywhere(tmp_path: Path) -> None:
    """With GOOGLE_CLOUD_PROJECT already set, the plugin keeps it: the topology is created there,
    and every fixture (cloudclients_emulators, cloudclients_env, emulator_settings, pubsub_topic)
    names it — not cloudclients-test."""
    tests = '''
    import os

    def test_one_project(cloudclients_emulators, cloudclients_env, emulator_settings, pubsub_topic,
                         emulator_registry):
        assert os.environ["GOOGLE_CLOUD_PROJECT"] == "my-own-project"
        assert cloudclients_emulators.project == "my-own-project"
        assert cloudclients_env["GOOGLE_CLOUD_PROJECT"] == "my-own-project"
        assert emulator_settings.project == "my-own-project"
        assert pubsub_topic.project == "my-own-project"
        assert pubsub_topic.topic.startswith("projects/my-own-project/topics/")
        sub = emulator_registry.subscriber.get_subscription(
            subscription="projects/my-own-project/subscriptions/orders-audit")
        assert sub.ack_deadline_seconds == 20
    '''
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY), "test_project.py": tests})
    done = run_pytest(tmp_path, env={"GOOGLE_CLOUD_PROJECT": "my-own-project"})
    assert done.returncode == 0, output(done)
    assert "project my-own-project" in header(done, "cloudclients: emulators")


def test_command_line_flags_and_where_topology_paths_are_resolved(tmp_path: Path) -> None:
    """--cloudclients-emulators and --cloudclients-topology work without ini lines; a command-line
    topology path is relative to the current directory, an ini one to the ini file's folder."""
    tests = '''
    import os, sys
    from cloudclients.testing import emulator_registry_for

    def test_topics(cloudclients_emulators):
        registry = emulator_registry_for(cloudclients_emulators)
        project = f"projects/{cloudclients_emulators.project}"
        names = sorted(t.name.rsplit("/", 1)[1] for t in registry.publisher.list_topics(project=project))
        registry.close()
        assert names == [os.environ["EXPECTED_TOPIC"]]
    '''
    write_project(tmp_path, {
        "cfg/pytest.ini": "[pytest]\ncloudclients_emulators = pubsub\ncloudclients_topology = topo.json\n",
        "cfg/topo.json": json.dumps({"topics": [{"name": "from-ini-folder"}]}),
        "topo.json": json.dumps({"topics": [{"name": "from-cwd"}]}),
        "tests/test_topics.py": tests,
    })
    by_ini = run_pytest(tmp_path, "-c", "cfg/pytest.ini", "tests", env={"EXPECTED_TOPIC": "from-ini-folder"})
    assert by_ini.returncode == 0, output(by_ini)
    by_flag = run_pytest(tmp_path, "-c", "cfg/pytest.ini", "--cloudclients-topology", "topo.json", "tests",
                         env={"EXPECTED_TOPIC": "from-cwd"})
    assert by_flag.returncode == 0, output(by_flag)
    (tmp_path / "cfg" / "pytest.ini").write_text("[pytest]\n")
    flags_only = run_pytest(tmp_path, "-c", "cfg/pytest.ini", "--cloudclients-emulators", "pubsub",
                            "--cloudclients-topology", "topo.json", "tests", env={"EXPECTED_TOPIC": "from-cwd"})
    assert flags_only.returncode == 0, output(flags_only)


@pytest.mark.parametrize(("ini", "expected"), [
    ("cloudclients_emulators = pubsub pubsup\n", "unknown emulator 'pubsup'; name pubsub and/or storage"),
    ("cloudclients_topology = missing.json\n",
     "cloudclients_topology = {root}/missing.json is set but cloudclients_emulators names no emulator"),
    ("cloudclients_emulators = pubsub\ncloudclients_topology = topology.json\n",
     "topology '{root}/topology.json': buckets: listed, but cloudclients_emulators has no storage"),
], ids=["unknown-emulator", "topology-without-emulators", "buckets-without-storage"])
def test_option_mistakes_are_one_usage_error(tmp_path: Path, ini: str, expected: str) -> None:
    """A misspelt emulator, a topology with no emulator to create it on, buckets without storage:
    one ERROR line naming the value and the fix, before any test runs."""
    write_project(tmp_path, {"pytest.ini": "[pytest]\n" + ini, "topology.json": json.dumps(TOPOLOGY),
                             "test_nothing.py": "def test_never_runs():\n    raise AssertionError\n"})
    done = run_pytest(tmp_path)
    assert done.returncode == 4, output(done)
    [error] = errors(done)
    assert error.startswith("ERROR: cloudclients: ") and expected.format(root=tmp_path) in error, error
    assert "Traceback" not in done.stderr and "test_never_runs" not in done.stdout


# -- start failures, --help, teardown ----------------------------------------------------------------

STUB_PUBSUB = {  # `python -m cloudclients_emulator` found first on PYTHONPATH: prints, then dies
    "stubs/cloudclients_emulator/__init__.py": "",
    "stubs/cloudclients_emulator/__main__.py": '''
    import sys
    print("cloudclients-emulator: starting", flush=True)
    print("boom: port in use", file=sys.stderr, flush=True)
    print("", file=sys.stderr)
    sys.exit(3)
    ''',
}
STUB_STORAGE = {  # the gcp-storage-emulator console script imports gcp_storage_emulator.__main__
    "stubs/gcp_storage_emulator/__init__.py": "",
    "stubs/gcp_storage_emulator/__main__.py": '''
    import sys

    def main():
        print("storage: loading", file=sys.stderr)
        print("storage boom: disk full", file=sys.stderr, flush=True)
        return 4
    ''',
}


@pytest.mark.parametrize(("kind", "stub", "expected"), [
    ("pubsub", STUB_PUBSUB, "cloudclients-emulator (Pub/Sub) exited with code 3 before it was ready: "
                            "boom: port in use (log: "),
    ("storage", STUB_STORAGE, "gcp-storage-emulator exited with code 4 before it was ready: "
                              "storage boom: disk full (log: "),
])
def test_an_emulator_that_crashes_at_start_fails_the_session_in_one_line(
    tmp_path: Path, kind: str, stub: dict[str, str], expected: str
) -> None:
    """An emulator that exits at start fails the session at once with one line: which emulator, its
    exit code, its last line of output and its log file (kept, holding the whole output)."""
    write_project(tmp_path, {"pytest.ini": f"[pytest]\ncloudclients_emulators = {kind}\n", **stub,
                             "test_nothing.py": "def test_never_runs():\n    raise AssertionError\n"})
    done = run_pytest(tmp_path, env={"PYTHONPATH": str(tmp_path / "stubs")})
    assert done.returncode != 0
    [error] = errors(done)
    assert f"ERROR: cloudclients: could not start the emulators ['{kind}']: {expected}" in error, error
    log = Path(re.search(r"\(log: (.+)\)$", error).group(1))  # type: ignore[union-attr]
    try:
        assert "boom" in log.read_text()
    finally:
        log.unlink()
    assert "Traceback" not in done.stderr and "test_never_runs" not in done.stdout


def test_an_emulator_that_is_not_installed_fails_the_session_in_one_line(tmp_path: Path) -> None:
    """Google's emulator asked for where Java cannot be found: one line naming what to install."""
    write_project(tmp_path, {"pytest.ini": "[pytest]\ncloudclients_emulators = pubsub\n",
                             "test_nothing.py": "def test_never_runs():\n    raise AssertionError\n"})
    done = run_pytest(tmp_path, "--pubsub-emulator=official", env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode != 0
    [error] = errors(done)
    assert "cloudclients: could not start the emulators ['pubsub']: Google's Pub/Sub emulator is not installed" in error
    assert "Traceback" not in done.stderr and "test_never_runs" not in done.stdout


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_start_nothing(tmp_path: Path, flag: str) -> None:
    """pytest --help / --version work even with a broken emulator configured: nothing is started."""
    write_project(tmp_path, {"pytest.ini": "[pytest]\ncloudclients_emulators = pubsub\n", **STUB_PUBSUB})
    done = run_pytest(tmp_path, flag, env={"PYTHONPATH": str(tmp_path / "stubs"), "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, output(done)
    assert not list(tmp_path.glob("cloudclients-*")), "an emulator was started"


def test_teardown_stops_the_emulators_and_restores_the_environment(tmp_path: Path) -> None:
    """At the end of the session the emulator processes are gone, their log files deleted, and
    every variable the plugin set is back as it was."""
    conftest = '''
    import json, os, pytest

    KEYS = ["PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS",
            "CLOUDSDK_CONFIG", "GCE_METADATA_HOST", "GCE_METADATA_IP", "NO_GCE_CHECK"]
    RECORD = {}

    @pytest.fixture(autouse=True)
    def _record(cloudclients_emulators):
        RECORD["pids"] = [p.process.pid for p in (cloudclients_emulators.pubsub, cloudclients_emulators.storage)]
        RECORD["logs"] = [p.log_path for p in (cloudclients_emulators.pubsub, cloudclients_emulators.storage)]

    @pytest.hookimpl(trylast=True)        # after the plugin's own pytest_unconfigure
    def pytest_unconfigure(config):
        RECORD["after"] = {key: os.environ.get(key) for key in KEYS}
        with open(os.environ["RECORD_FILE"], "w") as fh:
            json.dump(RECORD, fh)
    '''
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY), "conftest.py": conftest,
                             "test_x.py": "def test_x():\n    pass\n"})
    record = tmp_path / "record.json"
    before = {"GOOGLE_APPLICATION_CREDENTIALS": "/some/key.json", "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
              "RECORD_FILE": str(record)}
    done = run_pytest(tmp_path, env=before)
    assert done.returncode == 0, output(done)
    seen = json.loads(record.read_text())
    assert seen["after"] == {
        "PUBSUB_EMULATOR_HOST": None, "STORAGE_EMULATOR_HOST": None, "GOOGLE_CLOUD_PROJECT": None,
        "GOOGLE_APPLICATION_CREDENTIALS": "/some/key.json", "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "GCE_METADATA_HOST": None, "GCE_METADATA_IP": None, "NO_GCE_CHECK": None,
    }
    for pid in seen["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not [log for log in seen["logs"] if Path(log).exists()]


def test_a_session_that_stops_early_leaves_nothing_behind(tmp_path: Path) -> None:
    """pytest stopping on a bad flag after the emulators started (no pytest_unconfigure) still
    stops them at exit: no log file, no gcloud stand-in directory left in $TMPDIR."""
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY),
                             "test_x.py": "def test_x():\n    pass\n"})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_pytest(tmp_path, "--no-such-flag", env={"TMPDIR": str(scratch)})
    assert done.returncode == 4 and "--no-such-flag" in done.stderr, output(done)
    assert sorted(p.name for p in scratch.iterdir()) == []


# -- isolation ------------------------------------------------------------------------------------


def test_a_factory_app_and_the_reset_fixture(tmp_path: Path) -> None:
    """An app factory called in the test, and cloudclients_reset: the second test sees none of the
    first test's messages, buckets or objects, and the topology is back."""
    factory = '''
    from flask import Flask
    import cloudclients
    from cloudclients import CloudClients

    def create_app():
        app = Flask("factory")
        CloudClients(app)
        app.post("/ping")(lambda: {"id": cloudclients.publish("orders", b"ping").result(timeout=10)})
        return app
    '''
    tests = '''
    import time
    import pytest
    from cloudclients.testing import emulator_registry_for, pull_messages
    from factory import create_app

    @pytest.mark.usefixtures("cloudclients_reset")
    def test_first(cloudclients_emulators):
        assert create_app().test_client().post("/ping").status_code == 200
        registry = emulator_registry_for(cloudclients_emulators)
        registry.storage.bucket("receipts").blob("left-over").upload_from_string(b"x")
        registry.storage.create_bucket("scratch")
        registry.close()

    def test_second_sees_nothing(cloudclients_reset):
        from google.api_core.exceptions import AlreadyExists

        project = cloudclients_reset.project
        registry = emulator_registry_for(cloudclients_reset)
        with pytest.raises(AlreadyExists):   # the topology is back after the reset
            registry.publisher.create_topic(name=f"projects/{project}/topics/orders")
        assert pull_messages(registry, f"projects/{project}/subscriptions/orders-audit", expected=1, timeout=1) == []
        assert [b.name for b in registry.storage.list_buckets()] == ["receipts"]
        assert list(registry.storage.bucket("receipts").list_blobs()) == []
        registry.close()
    '''
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY), "factory.py": factory,
                             "test_factory.py": tests})
    done = run_pytest(tmp_path)
    assert done.returncode == 0, output(done)


def test_reset_with_only_pubsub_starts_no_storage(tmp_path: Path) -> None:
    """With cloudclients_emulators = pubsub, cloudclients_reset empties that emulator and starts
    no Storage emulator (nor skips for want of one)."""
    tests = '''
    import os

    def test_reset(cloudclients_reset):
        assert cloudclients_reset.pubsub is not None and cloudclients_reset.storage is None
        assert "STORAGE_EMULATOR_HOST" not in os.environ
    '''
    write_project(tmp_path, {"pytest.ini": "[pytest]\ncloudclients_emulators = pubsub\n", "test_reset.py": tests})
    done = run_pytest(tmp_path, "-rs")
    assert done.returncode == 0 and "1 passed" in done.stdout, output(done)


# -- production ---------------------------------------------------------------------------------------

PRODUCTION_TESTS = '''
import logging
import os

import google.auth
import pytest
from flask import Flask
from cloudclients import CloudClients, get_publisher


def app():
    app = Flask("prod")
    CloudClients(app)                        # no emulator anywhere
    return app


def test_hidden(caplog):
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
    assert os.environ["NO_GCE_CHECK"] == "true"
    with app().app_context(), pytest.raises(RuntimeError, match="would use real Google credentials"):
        get_publisher()
    caplog.set_level(logging.DEBUG, logger="google.auth")
    with pytest.raises(google.auth.exceptions.DefaultCredentialsError):
        google.auth.default()
    # No metadata-server attempts (three, ~3 s) and no hardware check: NO_GCE_CHECK is honoured.
    assert not [r for r in caplog.records if "Metadata server" in r.getMessage()], caplog.text


@pytest.mark.cloudclients_allow_production
def test_marked_gets_the_real_environment():
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == os.environ["EXPECTED_KEY"]
    assert os.environ["CLOUDSDK_CONFIG"] == os.environ["EXPECTED_GCLOUD"]
    assert "NO_GCE_CHECK" not in os.environ and "GCE_METADATA_HOST" not in os.environ
    credentials, project = google.auth.default()
    assert (credentials.service_account_email, project) == ("ci@real-looking-project.iam.gserviceaccount.com",
                                                            "real-looking-project")
    with app().app_context():
        assert get_publisher() is not None   # built with the key file, nothing sent


def test_hidden_again_after_the_marked_test():
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
    with pytest.raises(google.auth.exceptions.DefaultCredentialsError):
        google.auth.default()
'''


def test_production_is_out_of_reach_and_the_marker_gives_it_back(tmp_path: Path) -> None:
    """With no ini option at all: ADC finds nothing, at once (NO_GCE_CHECK, no metadata attempts),
    a cloudclients client without an emulator raises, and the header says what was hidden; a test
    marked cloudclients_allow_production gets the real GOOGLE_APPLICATION_CREDENTIALS,
    CLOUDSDK_CONFIG and metadata settings back (google.auth.default() loads the key file), and the
    next test is protected again."""
    pytest.importorskip("google.auth", minversion="2.48")  # NO_GCE_CHECK is honoured from 2.48
    key = service_account_file(tmp_path / "key.json")
    gcloud = tmp_path / "gcloud"
    gcloud.mkdir()
    write_project(tmp_path, {"pytest.ini": "[pytest]\n", "test_prod.py": PRODUCTION_TESTS})
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key), "CLOUDSDK_CONFIG": str(gcloud),
           "EXPECTED_KEY": str(key), "EXPECTED_GCLOUD": str(gcloud)}
    done = run_pytest(tmp_path, env=env)
    assert done.returncode == 0, output(done)
    line = header(done, "cloudclients: production out of reach")
    assert f"GOOGLE_APPLICATION_CREDENTIALS unset (was {str(key)!r})" in line
    assert "NO_GCE_CHECK=true" in line and "CLOUDSDK_CONFIG" in line and "GCE_METADATA_HOST" in line
    assert "cloudclients_allow_production = true" in line and "-p no:cloudclients" in line


ALLOWED_TESTS = '''
import os
import google.auth
from flask import Flask
from cloudclients import CloudClients, get_publisher

def test_allowed():
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == os.environ["EXPECTED_KEY"]
    assert "NO_GCE_CHECK" not in os.environ
    assert google.auth.default()[1] == "real-looking-project"
    app = Flask("prod")
    CloudClients(app)
    with app.app_context():
        assert get_publisher() is not None
'''


@pytest.mark.parametrize(("ini", "args", "expected_header"), [
    ("cloudclients_allow_production = true\n", (), "cloudclients: production allowed"),
    ("", ("-p", "no:cloudclients"), None),
], ids=["ini", "no-plugin"])
def test_opting_out_of_the_production_guard(
    tmp_path: Path, ini: str, args: tuple[str, ...], expected_header: str | None
) -> None:
    """cloudclients_allow_production = true, or -p no:cloudclients (the plugin's registered name),
    leaves the environment and real credentials alone."""
    key = service_account_file(tmp_path / "key.json")
    write_project(tmp_path, {"pytest.ini": "[pytest]\n" + ini, "test_allowed.py": ALLOWED_TESTS})
    done = run_pytest(tmp_path, *args, env={"GOOGLE_APPLICATION_CREDENTIALS": str(key), "EXPECTED_KEY": str(key)})
    assert done.returncode == 0, output(done)
    lines = [line for line in done.stdout.splitlines() if line.startswith("cloudclients:")]
    assert lines == ([header(done, expected_header)] if expected_header else []), lines


# -- pytest-xdist -------------------------------------------------------------------------------------

XDIST_TESTS = '''
import os, pytest

@pytest.mark.parametrize("n", range(6))
def test_where(n):
    with open(os.path.join(os.environ["RECORD_DIR"], f"{n}.txt"), "w") as fh:
        fh.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + " " + os.environ["PUBSUB_EMULATOR_HOST"])

@pytest.mark.cloudclients_allow_production
def test_marked_in_a_worker_too():
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == os.environ["EXPECTED_KEY"]
'''


@pytest.mark.parametrize(("args", "env", "workers"), [
    (("-n", "2"), {}, 2),
    (("--dist", "load", "--tx", "2*popen"), {}, 2),
    (("-n", "auto"), {"PYTEST_XDIST_AUTO_NUM_WORKERS": "0"}, 0),
    (("-n", "auto", "--pdb"), {}, 0),
], ids=["n2", "tx", "auto-zero-workers", "auto-pdb"])
def test_emulators_run_where_the_tests_run_under_xdist(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], workers: int
) -> None:
    """When xdist starts workers, each starts (and stops) its own emulators and the controller none;
    when it ends up starting none (-n auto with zero CPUs counted, or --pdb), the main process
    starts them. A marked test in a worker gets the real environment back too."""
    pytest.importorskip("xdist")
    write_project(tmp_path, {"pytest.ini": INI.replace("cloudclients_topology = topology.json\n", ""),
                             "test_where.py": XDIST_TESTS})
    record = tmp_path / "record"
    record.mkdir()
    key = "/ci/key.json"
    done = run_pytest(tmp_path, *args, env={"RECORD_DIR": str(record), "GOOGLE_APPLICATION_CREDENTIALS": key,
                                            "EXPECTED_KEY": key, **env})
    assert done.returncode == 0, output(done)
    seen = dict(tuple(p.read_text().split()) for p in record.iterdir())
    if workers:
        assert len(seen) == workers and len(set(seen.values())) == workers, seen
        assert "emulators pubsub storage start in each xdist worker" in header(done, "cloudclients: emulators")
    else:
        assert list(seen) == ["main"], seen
        assert "cloudclients at 127.0.0.1:" in header(done, "cloudclients: emulators")


# -- without pytest ---------------------------------------------------------------------------------


def test_start_emulators_without_pytest() -> None:
    """start_emulators() is a context manager: both emulators serve inside, are stopped after."""
    with start_emulators(["pubsub", "storage"]) as emulators:
        assert set(emulators.env) == {"PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"}
        assert emulators.pubsub is not None and emulators.pubsub.alive()
        assert emulators.reset() >= 0.0
        pubsub = emulators.pubsub
    assert not pubsub.alive()
