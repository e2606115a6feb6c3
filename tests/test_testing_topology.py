"""Topology files: one set of rules for the pytest plugin (load_topology) and cloudclients-emulator
--topology, so a file works in both or is refused by both with the same single line naming the file
and the field. The rules are checked in-process (fast); the emulator command and a plugin session
run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cloudclients.testing
from cloudclients.testing import TopologyError, load_topology
from tests.sample_project import INI, errors, run_pytest, write_project

ROOT = Path(__file__).resolve().parent.parent


BAD_TOPOLOGIES: list[tuple[str, Any, str]] = [
    ("not-json", "{", "is not valid JSON: Expecting property name"),
    ("top-level-list", [1], "the top level: must be an object"),
    ("unknown-top-key", {"topics": [], "subscriptions": []}, "subscriptions: unknown key; a topology has only"),
    ("topics-string", {"topics": "orders"}, 'topics: must be a list, not "orders"'),
    ("topic-string", {"topics": ["orders"]}, "topics[0]: must be an object with a 'name'"),
    ("topic-misspelt-key", {"topics": [{"nam": "orders"}]}, "topics[0].nam: unknown key"),
    ("topic-no-name", {"topics": [{"labels": {}}]}, "topics[0].name: missing"),
    ("labels-string", {"topics": [{"name": "o", "labels": "x"}]}, 'topics[0].labels: must be an object of strings'),
    ("label-number", {"topics": [{"name": "o", "labels": {"a": 1}}]}, "topics[0].labels.a: must be a string, not 1"),
    ("subscriptions-object", {"topics": [{"name": "o", "subscriptions": {}}]}, "topics[0].subscriptions: must be a"),
    ("subscription-unknown-field", {"topics": [{"name": "o", "subscriptions": [{"name": "s", "ackDeadline": 9}]}]},
     "topics[0].subscriptions[0].ackDeadline: not a field of google.pubsub.v1.Subscription"),
    ("subscription-bad-value", {"topics": [{"name": "o", "subscriptions": [{"name": "s", "ackDeadlineSeconds": "x"}]}]},
     "topics[0].subscriptions[0].ackDeadlineSeconds: "),
    ("push-config-string", {"topics": [{"name": "o", "subscriptions": [{"name": "s", "pushConfig": "http://x"}]}]},
     "topics[0].subscriptions[0].pushConfig: must be an object (google.pubsub.v1.PushConfig)"),
    ("push-config-unknown", {"topics": [{"name": "o", "subscriptions": [{"name": "s", "pushConfig": {"url": 1}}]}]},
     "topics[0].subscriptions[0].pushConfig.url: not a field of google.pubsub.v1.PushConfig"),
    ("subscription-topic", {"topics": [{"name": "o", "subscriptions": [{"name": "s", "topic": "t"}]}]},
     "topics[0].subscriptions[0].topic: not allowed"),
    ("duplicate-topic", {"topics": [{"name": "o"}, {"name": "o"}]}, "topics[1].name: 'o' is listed twice"),
    ("bucket-number", {"buckets": ["a", 3]}, "buckets[1]: must be a bucket name"),
]


def write_topology(directory: Path, name: str, spec: Any) -> Path:
    path = directory / f"{name}.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


@pytest.mark.parametrize(("name", "spec", "expected"), BAD_TOPOLOGIES, ids=[b[0] for b in BAD_TOPOLOGIES])
def test_a_malformed_topology_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path, name: str, spec: Any, expected: str
) -> None:
    """load_topology refuses every malformed shape with a TopologyError of one line that names the
    file and the field — never a raw TypeError or protobuf's two-line message."""
    path = write_topology(tmp_path, name, spec)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"topology {str(path)!r}") and expected in message, message


def test_a_topology_of_every_documented_feature_loads(tmp_path: Path) -> None:
    """Labels, snake_case or camelCase Subscription fields, full names, buckets: accepted as written."""
    spec = {"topics": [{"name": "orders", "labels": {"team": "shop"}, "subscriptions": [
        {"name": "orders-worker", "ack_deadline_seconds": 30, "filter": "attributes.kind = \"x\""},
        {"name": "orders-push", "pushConfig": {"pushEndpoint": "http://127.0.0.1:8080/push",
                                               "oidcToken": {"serviceAccountEmail": "p@x.iam.gserviceaccount.com"}},
         "expirationPolicy": {"ttl": "86400s"}}]},
        {"name": "projects/other/topics/audit"}], "buckets": ["receipts"]}
    topology = load_topology(write_topology(tmp_path, "good", spec))
    assert list(topology.topics) == ["orders", "projects/other/topics/audit"]
    assert topology.labels == {"orders": {"team": "shop"}} and topology.buckets == ("receipts",)
    assert topology.topics["orders"][1]["pushConfig"]["pushEndpoint"] == "http://127.0.0.1:8080/push"


def test_the_emulator_and_the_plugin_read_topologies_by_the_same_rules() -> None:
    """The rules exist once per distribution (neither may depend on the other) and are the same file."""
    plugin = Path(cloudclients.testing.__file__).with_name("_topology_rules.py")
    emulator = ROOT / "emulator" / "cloudclients_emulator" / "topology_rules.py"
    assert plugin.read_bytes() == emulator.read_bytes(), f"{plugin} and {emulator} differ: copy one over the other"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "spec", "expected"), BAD_TOPOLOGIES, ids=[b[0] for b in BAD_TOPOLOGIES])
def test_the_emulator_command_refuses_the_same_files_with_the_same_line(
    tmp_path: Path, name: str, spec: Any, expected: str
) -> None:
    """cloudclients-emulator --topology refuses each malformed file with exit 2 and the very line
    load_topology raises, nothing else on stderr."""
    pytest.importorskip("cloudclients_emulator")
    path = write_topology(tmp_path, name, spec)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    done = subprocess.run([sys.executable, "-m", "cloudclients_emulator", "--host-port", "127.0.0.1:0",
                           "--topology", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"cloudclients-emulator: {caught.value}"]


IN_A_SESSION = [b for b in BAD_TOPOLOGIES if b[0] in ("labels-string", "label-number", "push-config-unknown")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "spec", "expected"), IN_A_SESSION, ids=[b[0] for b in IN_A_SESSION])
def test_a_malformed_topology_fails_the_session_in_one_line(
    tmp_path: Path, name: str, spec: Any, expected: str
) -> None:
    """The plugin refuses a malformed topology before any test with that same single line."""
    write_topology(tmp_path, "topology", spec)
    write_project(tmp_path, {"pytest.ini": INI, "test_nothing.py": "def test_never_runs():\n    pass\n"})
    done = run_pytest(tmp_path)
    assert done.returncode == 4
    [error] = errors(done)
    where = str(tmp_path / "topology.json")
    assert error.startswith(f"ERROR: cloudclients: topology {where!r}") and expected in error, error
    assert "Traceback" not in done.stderr and "test_never_runs" not in done.stdout
