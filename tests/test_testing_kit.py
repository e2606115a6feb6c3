"""The testing kit as a user's project meets it: a sample-style app created at import time (and a
factory app) tested with only the two ini lines, in a pytest run of its own; one clear line when
an emulator cannot start; no way to reach production by accident; isolation between tests; the
push helpers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cloudclients.testing import start_emulators

pytestmark = pytest.mark.slow

INI = """\
[pytest]
cloudclients_emulators = pubsub storage
cloudclients_topology = topology.json
"""

TOPOLOGY = {"topics": [{"name": "orders", "subscriptions": [{"name": "orders-audit", "ackDeadlineSeconds": 20}]}],
            "buckets": ["receipts"]}

# A Google-sample-shaped app: created at import, settings from the environment only.
MAIN = '''
import os
import re
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
import main                                    # at the top, as the samples do
from google.cloud import pubsub_v1, storage
from google.auth.credentials import AnonymousCredentials


def test_the_app_saw_the_emulator_when_it_was_imported():
    assert main.EMULATOR_AT_IMPORT


def test_an_order_is_published_and_stored():
    response = main.app.test_client().post("/orders", data=b"book")
    assert response.status_code == 200, response.get_data(as_text=True)
    message_id = response.get_json()["id"]
    subscriber = pubsub_v1.SubscriberClient()      # the stock client, from PUBSUB_EMULATOR_HOST
    pulled = subscriber.pull(subscription="projects/cloudclients-test/subscriptions/orders-audit",
                             max_messages=10, timeout=10)
    assert [m.message.data for m in pulled.received_messages] == [b"book"]
    blob = storage.Client(credentials=AnonymousCredentials(), project="cloudclients-test") \\
        .bucket("receipts").blob(message_id)
    assert blob.download_as_bytes() == b"book"
'''


def write_project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def run_pytest(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    clean.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=root,
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False)


def test_an_app_created_at_import_is_tested_with_two_ini_lines(tmp_path: Path) -> None:
    """A sample-style project — `import main` at the top of its test module, no conftest, no
    fixtures — passes against both emulators with only the two ini lines and a topology file."""
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY), "main.py": MAIN,
                             "test_main.py": TEST_MAIN})
    started = time.monotonic()
    done = run_pytest(tmp_path, "-s")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
    header = next(line for line in done.stdout.splitlines() if line.startswith("cloudclients: emulators"))
    print(f"\n{header}; whole run {elapsed:.1f} s")


def test_a_factory_app_and_the_reset_fixture(tmp_path: Path) -> None:
    """An app factory called in the test, and cloudclients_reset: the second test sees none of the
    first test's messages, and the topology is back."""
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

    SUB = "projects/cloudclients-test/subscriptions/orders-audit"

    @pytest.mark.usefixtures("cloudclients_reset")
    def test_first(cloudclients_emulators):
        assert create_app().test_client().post("/ping").status_code == 200

    def test_second_sees_nothing(cloudclients_reset):
        from google.api_core.exceptions import AlreadyExists

        registry = emulator_registry_for(cloudclients_reset)
        with pytest.raises(AlreadyExists):   # the topology is back after the reset
            registry.publisher.create_topic(name="projects/cloudclients-test/topics/orders")
        assert pull_messages(registry, SUB, expected=1, timeout=1) == []
        registry.close()
        started = time.monotonic()
        cloudclients_reset.reset()
        print(f"RESET {time.monotonic() - started:.4f}")
    '''
    write_project(tmp_path, {"pytest.ini": INI, "topology.json": json.dumps(TOPOLOGY), "factory.py": factory,
                             "test_factory.py": tests})
    done = run_pytest(tmp_path, "-s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reset = next(line for line in done.stdout.splitlines() if "RESET" in line)
    print(f"\nreset of both emulators: {reset.split()[-1]} s")


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR:")]


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


def test_tests_cannot_reach_production_unless_allowed(tmp_path: Path) -> None:
    """Inside the plugin a client without an emulator host raises instead of using ADC, and the
    stock libraries find no credentials (metadata server and gcloud out of reach); the ini opt-out
    lifts it."""
    tests = '''
    import google.auth
    import pytest
    from flask import Flask
    from cloudclients import CloudClients, get_publisher

    def test_no_production():
        app = Flask("prod")
        CloudClients(app)                        # no emulator anywhere
        with app.app_context(), pytest.raises(RuntimeError, match="would use real Google credentials"):
            get_publisher()
        with pytest.raises(google.auth.exceptions.DefaultCredentialsError):
            google.auth.default()
    '''
    write_project(tmp_path, {"pytest.ini": "[pytest]\n", "test_prod.py": tests})
    done = run_pytest(tmp_path, env={"GOOGLE_APPLICATION_CREDENTIALS": "/should/be/ignored.json"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

    allowed = '''
    from flask import Flask
    from cloudclients import CloudClients, get_publisher
    from cloudclients import _guard

    def test_allowed():
        _guard.check("anything")                 # does not raise: production allowed by the ini
    '''
    write_project(tmp_path, {"pytest.ini": "[pytest]\ncloudclients_allow_production = true\n",
                             "test_prod.py": allowed})
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_each_xdist_worker_gets_its_own_emulators(tmp_path: Path) -> None:
    """Under pytest -n 2, each worker starts (and stops) its own emulators; the controller none."""
    pytest.importorskip("xdist")
    tests = '''
    import os, pytest

    @pytest.mark.parametrize("n", range(8))
    def test_where(n):
        with open(os.path.join(os.environ["RECORD_DIR"], f"{n}.txt"), "w") as fh:
            fh.write(os.environ["PYTEST_XDIST_WORKER"] + " " + os.environ["PUBSUB_EMULATOR_HOST"])
    '''
    write_project(tmp_path, {"pytest.ini": INI.replace("cloudclients_topology = topology.json\n", ""),
                             "test_where.py": tests})
    record = tmp_path / "record"
    record.mkdir()
    done = run_pytest(tmp_path, "-n", "2", env={"RECORD_DIR": str(record)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    seen = {tuple(p.read_text().split()) for p in record.iterdir()}
    workers = {worker: host for worker, host in seen}
    assert len(workers) == 2 and len(set(workers.values())) == 2, seen


def test_start_emulators_without_pytest() -> None:
    """start_emulators() is a context manager: both emulators serve inside, are stopped after."""
    with start_emulators(["pubsub", "storage"]) as emulators:
        assert set(emulators.env) == {"PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"}
        assert emulators.pubsub is not None and emulators.pubsub.alive()
        assert emulators.reset() >= 0.0
        pubsub = emulators.pubsub
    assert not pubsub.alive()
