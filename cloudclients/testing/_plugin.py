"""The pytest plugin: emulators before collection, isolation, no production, fixtures.

Loaded whenever cloudclients is installed next to pytest (a ``pytest11`` entry point named
``cloudclients`` in the core package: no extra, no import, no conftest needed). With no ini option
set, all it does is keep the run away from production (below) and offer its fixtures.

Two ini lines (or the matching command-line flags) start emulators for a project::

    [pytest]
    cloudclients_emulators = pubsub storage
    cloudclients_topology = topology.json

The named emulators start before any conftest or test module is imported —
apps created at import time (``import main`` at the top of a test file) see
``PUBSUB_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT``
— the topology is created, and everything stops when the session ends (at
interpreter exit too, if pytest stops early). Under pytest-xdist each worker
gets its own emulators and the controller starts none. ``--help`` and
``--version`` start nothing.

Production is out of reach by default: ``GOOGLE_APPLICATION_CREDENTIALS`` is
unset, ``CLOUDSDK_CONFIG`` points at an empty directory (gcloud's credentials
hidden), ``GCE_METADATA_HOST``/``GCE_METADATA_IP`` point at a loopback port that
refuses connections, ``NO_GCE_CHECK=true``, and a cloudclients client that would
use real credentials raises. The session header says so. Opt out with
``cloudclients_allow_production = true`` (``--cloudclients-allow-production``),
per test with ``@pytest.mark.cloudclients_allow_production`` (the real
environment is given back for that test), or drop the plugin: ``-p no:cloudclients``.

What a run set up is a ``_session.Session``; the fixtures tests ask for are in
``_fixtures`` and find it through ``session_of``.
"""

from __future__ import annotations

import atexit
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from ._emulators import (
    EmulatorError,
    EmulatorKind,
    start_emulators,
)
from ._production import Shield
from ._session import SESSION_KEY, Session, default_project, session_of
from ._topology import Topology, TopologyError, load_topology

__all__ = ["pytest_addoption", "pytest_configure", "pytest_load_initial_conftests", "pytest_report_header",
           "pytest_unconfigure"]

_ALLOW_MARK = "cloudclients_allow_production"


# -- options ------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudclients")
    group.addoption(
        "--pubsub-emulator",
        choices=("auto", "cloudclients", "official"),
        default=os.environ.get("CLOUDCLIENTS_TEST_PUBSUB_EMULATOR", "auto"),
        help="Pub/Sub emulator for the session and the pubsub_emulator fixture (default: auto, this project's "
             "when installed).",
    )
    group.addoption("--cloudclients-emulators", default=None, metavar="KINDS",
                    help="Emulators to start before collection, e.g. 'pubsub storage' (ini: cloudclients_emulators).")
    group.addoption("--cloudclients-topology", default=None, metavar="FILE",
                    help="Topology JSON to create on them, relative to the current directory (ini: "
                         "cloudclients_topology, relative to the ini file).")
    group.addoption("--cloudclients-allow-production", action="store_true", default=None,
                    help="Let clients use real credentials (ini: cloudclients_allow_production).")
    parser.addini("cloudclients_emulators", "Emulators to start before collection: pubsub and/or storage.",
                  type="args", default=[])
    parser.addini("cloudclients_topology", "Topology JSON (same as cloudclients-emulator --topology), relative "
                  "to the ini file.", default="")
    parser.addini("cloudclients_allow_production", "Let clients use real Google credentials during tests.",
                  type="bool", default=False)


def _cli(config: pytest.Config, dest: str) -> Any:
    # In pytest_load_initial_conftests the options are only pre-parsed: read them there.
    known = getattr(config, "known_args_namespace", None)
    value = getattr(known, dest, None) if known is not None else None
    return value if value is not None else getattr(config.option, dest, None)


def _option(config: pytest.Config, name: str) -> Any:
    """An option of ours: the command-line flag if given, else the ini value."""
    value = _cli(config, f"cloudclients_{name}")
    return config.getini(f"cloudclients_{name}") if value is None else value


# -- session set-up, before any conftest is imported ------------------------------------------


_EARLY: Session | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # Runs for installed plugins before the first conftest.py is imported: the
    # earliest point at which an app created at import time can be helped.
    global _EARLY  # noqa: PLW0603 - handed to pytest_configure
    _EARLY = _set_up(early_config, predict_xdist=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{_ALLOW_MARK}: let this test's clients use real Google credentials "
                                       "(the real environment is given back for it).")
    global _EARLY
    session, _EARLY = (_EARLY if _EARLY is not None else _set_up(config, predict_xdist=False)), None
    config.stash[SESSION_KEY] = session
    # xdist has now settled how many workers it starts (-n auto, --pdb, a conftest's hook):
    # correct the guess made before the conftests were imported.
    if session.kinds and not _help_or_version(config):
        distributing = _xdist_distributes(config)
        if distributing and session.emulators is not None:
            session.stop_emulators()  # the workers start their own
            session.deferred_to_workers = True
        elif not distributing and session.emulators is None:
            session.deferred_to_workers = False
            _start_guarded(config, session)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = session_of(config)
    if session is not None:
        session.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = session_of(config)
    if session is None:
        return []
    lines = []
    if session.emulators is not None:
        names = [f"{p.kind} at {p.host}" for p in (session.emulators.pubsub, session.emulators.storage) if p]
        lines.append(f"cloudclients: emulators {', '.join(names)}, project {session.project} "
                     f"(started in {session.startup_seconds:.2f} s)")
    elif session.deferred_to_workers:
        lines.append(f"cloudclients: emulators {' '.join(session.kinds)} start in each xdist worker")
    if session.shield is not None:
        lines.append(session.shield.describe())
    elif not _help_or_version(config):
        lines.append("cloudclients: production allowed (cloudclients_allow_production); clients may use real "
                     "credentials")
    return lines


def _help_or_version(config: pytest.Config) -> bool:
    return bool(_cli(config, "help") or _cli(config, "version"))


def _set_up(config: pytest.Config, *, predict_xdist: bool) -> Session:
    session = Session(project=default_project())
    if _help_or_version(config):
        return session  # pytest --help / --version: nothing to protect, nothing to start
    atexit.register(session.close)  # pytest may stop before pytest_unconfigure (a bad flag)
    try:
        if not _option(config, "allow_production"):
            session.shield = Shield()
        session.kinds = tuple(_kinds(config))
        topology = _topology_path(config)
        if topology is not None and not session.kinds:
            raise pytest.UsageError(
                f"cloudclients: cloudclients_topology = {topology} is set but cloudclients_emulators names no "
                "emulator to create it on; add cloudclients_emulators = pubsub (and storage, for buckets), "
                "or remove cloudclients_topology")
        if topology is not None:
            session.topology = _load(topology, session.kinds)
        if session.kinds:
            if predict_xdist and _xdist_will_distribute(config):
                session.deferred_to_workers = True  # the controller runs no tests
            else:
                _start(config, session)
    except BaseException:
        session.close()
        raise
    return session


def _start_guarded(config: pytest.Config, session: Session) -> None:
    try:
        _start(config, session)
    except BaseException:
        session.close()
        raise


def _kinds(config: pytest.Config) -> list[EmulatorKind]:
    raw = _option(config, "emulators")
    kinds = shlex.split(raw) if isinstance(raw, str) else list(raw)
    unknown = [k for k in kinds if k not in ("pubsub", "storage")]
    if unknown:
        raise pytest.UsageError(
            f"cloudclients: cloudclients_emulators = {' '.join(kinds)}: unknown emulator {unknown[0]!r}; "
            "name pubsub and/or storage")
    return cast(list[EmulatorKind], list(dict.fromkeys(kinds)))


def _topology_path(config: pytest.Config) -> Path | None:
    """The topology file: a command-line path is relative to the current directory (like pytest's
    own options), an ini value to the ini file's folder."""
    given = _cli(config, "cloudclients_topology")
    if given:
        base = config.invocation_params.dir
    else:
        given = config.getini("cloudclients_topology")
        if not given:
            return None
        base = config.inipath.parent if config.inipath is not None else config.rootpath
    path = Path(given)
    return path if path.is_absolute() else base / path


def _load(path: Path, kinds: tuple[EmulatorKind, ...]) -> Topology:
    try:
        topology = load_topology(path)
    except TopologyError as exc:
        raise pytest.UsageError(f"cloudclients: {exc}") from None
    if topology.buckets and "storage" not in kinds:
        raise pytest.UsageError(f"cloudclients: topology {str(path)!r}: buckets: listed, but cloudclients_emulators "
                                "has no storage; add storage to it")
    if topology.topics and "pubsub" not in kinds:
        raise pytest.UsageError(f"cloudclients: topology {str(path)!r}: topics: listed, but cloudclients_emulators "
                                "has no pubsub; add pubsub to it")
    return topology


def _xdist_will_distribute(config: pytest.Config) -> bool:
    """Whether pytest-xdist will run the tests in workers, decided as its pytest_cmdline_main will
    decide it (xdist/plugin.py), from the pre-parsed options: -n N|auto|logical, --pdb (auto → 0),
    PYTEST_XDIST_AUTO_NUM_WORKERS, --maxprocesses, --dist, --tx, --collect-only."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False  # a worker runs tests: it needs emulators
    ns = getattr(config, "known_args_namespace", config.option)
    if not hasattr(ns, "numprocesses") or getattr(ns, "collectonly", False):
        return False  # xdist not installed (or -p no:xdist), or collection only
    dist = "load" if getattr(ns, "distload", False) else getattr(ns, "dist", "no")
    tx = list(getattr(ns, "tx", None) or [])
    numprocesses = ns.numprocesses
    if numprocesses in ("auto", "logical"):
        if getattr(ns, "usepdb", False):
            numprocesses, dist = 0, "no"
        else:
            numprocesses = config.hook.pytest_xdist_auto_num_workers(config=config)
    if numprocesses:
        dist = "load" if dist == "no" else dist
        maxprocesses = getattr(ns, "maxprocesses", None)
        tx = ["popen"] * (min(numprocesses, maxprocesses) if maxprocesses else numprocesses)
    if numprocesses == 0:
        dist, tx = "no", []
    return dist != "no" and bool(tx)


def _xdist_distributes(config: pytest.Config) -> bool:
    """After xdist's pytest_cmdline_main: whether this process is a controller handing tests to workers."""
    if os.environ.get("PYTEST_XDIST_WORKER") or hasattr(config, "workerinput"):
        return False
    if config.getoption("collectonly", False):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def _start(config: pytest.Config, session: Session) -> None:
    started = time.monotonic()
    try:
        session.emulators = start_emulators(session.kinds, project=session.project,
                                            pubsub_kind=_cli(config, "pubsub_emulator") or "auto")
    except (EmulatorError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise pytest.UsageError(f"cloudclients: could not start the emulators {list(session.kinds)}: {reason}") \
            from None
    exported = _export({**session.emulators.env, "GOOGLE_CLOUD_PROJECT": session.project})
    session.environ = {**exported, **(session.environ or {})}
    if session.topology is not None:
        session.create_topology()
    session.startup_seconds = time.monotonic() - started


def _export(changes: dict[str, str]) -> dict[str, str | None]:
    """Set *changes* in os.environ; return what to restore."""
    previous: dict[str, str | None] = {}
    for key, value in changes.items():
        if key == "GOOGLE_CLOUD_PROJECT" and os.environ.get(key):
            continue  # the user's own project wins
        previous[key] = os.environ.get(key)
        os.environ[key] = value
    return previous


@pytest.fixture(autouse=True)
def _cloudclients_production_mark(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a test marked ``cloudclients_allow_production``: the real environment back
    (``GOOGLE_APPLICATION_CREDENTIALS``, ``CLOUDSDK_CONFIG``, the metadata variables,
    ``NO_GCE_CHECK``) and real credentials allowed; hidden again after the test."""
    session = session_of(request.config)
    shield = session.shield if session is not None else None
    if shield is None or request.node.get_closest_marker(_ALLOW_MARK) is None:
        yield
        return
    shield.lift()
    try:
        yield
    finally:
        shield.cover()
