"""`make test-lowest`: what to install so the fast tests run on the lowest versions we declare.

Three outputs, one per subcommand:

``requirements``
    What the fast tests need: the runtime dependencies of cloudclients and of the emulator, the
    ``testing`` extra, the two dev tools the fast tests import (``DEV_TOOLS``), and the Google
    client stack our code uses without declaring it (``GOOGLE_STACK``), unversioned.
``constraints``
    ``name==floor`` for each of those with a ``>=`` bound in either pyproject.toml, so every
    declared lower bound is exactly what gets installed (a bound naming no release fails the
    install: raise it to the lowest release).
``report``
    Run with the lowest venv's Python: a table of floor and installed version, exit 1 if a
    declared floor is not what is installed.

The installer resolves with ``uv pip install --resolution lowest-direct``: everything named in
``requirements`` at the lowest version that resolves (so ``GOOGLE_STACK`` lands on the lowest the
declared floors allow, e.g. google-auth at google-cloud-storage 2.18's own floor), everything else
(urllib3, certifi, …) at the newest, as a fresh install would get it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = [ROOT / "pyproject.toml", ROOT / "emulator" / "pyproject.toml"]
OWN = {"cloudclients", "cloudclients-emulator"}

# From the dev extra, what the fast tests need: pytest's `timeout` ini key; tests/oidc.py.
DEV_TOOLS = ["pytest-timeout", "cryptography"]

# Imported by cloudclients or the emulator (grpc, google.auth, google.api_core, google.protobuf,
# werkzeug, click) or moving in lockstep with those. Those we declare get their floor pinned; the
# rest land on the lowest version our dependencies' floors allow.
GOOGLE_STACK = [
    "grpcio",
    "grpcio-status",
    "protobuf",
    "proto-plus",
    "googleapis-common-protos",
    "google-api-core",
    "google-auth",
    "google-cloud-core",
    "google-resumable-media",
    "werkzeug",
    "click",
]

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def _name(requirement: str) -> tuple[str, str]:
    """Split a PEP 508 requirement into its normalised name and its version specifiers."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"cannot read the requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), match.group(2).strip()


def _floor(specifiers: str) -> str | None:
    found = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
    return found[0] if found else None


def _declared() -> dict[str, list[str]]:
    """Every requirement of both projects, by section ("dependencies", or the extra's name)."""
    sections: dict[str, list[str]] = {}
    for path in PROJECTS:
        project = tomllib.loads(path.read_text())["project"]
        sections.setdefault("dependencies", []).extend(project.get("dependencies", []))
        for extra, requirements in project.get("optional-dependencies", {}).items():
            sections.setdefault(extra, []).extend(requirements)
    return sections


def requirements() -> list[str]:
    """The requirements to install, each name once (the first declaration wins)."""
    sections = _declared()
    candidates = sections["dependencies"] + sections["testing"]
    candidates += [r for r in sections["dev"] if _name(r)[0] in DEV_TOOLS]
    chosen: dict[str, str] = {}
    for requirement in candidates + GOOGLE_STACK:
        name = _name(requirement)[0]
        if name not in OWN:
            chosen.setdefault(name, requirement)
    return list(chosen.values())


def floors() -> dict[str, str]:
    """name -> the version of its ``>=`` bound, for every requirement that has one."""
    found: dict[str, str] = {}
    for requirement in (r for rs in _declared().values() for r in rs):
        name, specifiers = _name(requirement)
        floor = _floor(specifiers)
        if floor is None or name in OWN:
            continue
        if found.setdefault(name, floor) != floor:
            raise SystemExit(f"{name} has two lower bounds ({found[name]} and {floor}): make them one")
    return found


def _release(version: str) -> list[int]:
    """The release numbers of a version, trailing zeros dropped: "3.0" and "3.0.0" are [3]."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    numbers = [int(n) for n in match.group(0).split(".")] if match else []
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return numbers


def report() -> int:
    wanted = {_name(r)[0] for r in requirements()}
    declared = floors()
    failures = 0
    print(f"{'package':<28}{'declared floor':<16}installed")
    for name in sorted(wanted):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "(not installed)"
        floor = declared.get(name, "")
        wrong = bool(floor) and _release(floor) != _release(installed)
        failures += wrong
        print(f"{name:<28}{floor or '-':<16}{installed}{'   <- not the declared floor' if wrong else ''}")
    print("(-: not declared by us; the lowest version that resolves with the declared floors)")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) == 2 else ""
    if command == "requirements":
        print("\n".join(requirements()))
    elif command == "constraints":
        installed = {_name(r)[0] for r in requirements()}
        print("\n".join(f"{name}=={floor}" for name, floor in sorted(floors().items()) if name in installed))
    elif command == "report":
        return report()
    else:
        print(f"usage: {argv[0]} requirements | constraints | report", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
