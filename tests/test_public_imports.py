"""Nothing outside the package reaches into it: tests, benchmarks, examples and the docs use only
public names (``cloudclients``, ``cloudclients.testing``), never a ``cloudclients._x`` module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRIVATE = re.compile(r"\bfrom\s+cloudclients(?:\.\w+)*\s+import\s+\(?\s*_[A-Za-z]|\bcloudclients(?:\.\w+)*\._[A-Za-z]")


def _private(dotted: str) -> bool:
    root, *rest = dotted.split(".")
    return root == "cloudclients" and any(part.startswith("_") and not part.startswith("__") for part in rest)


def private_uses(source: str) -> list[str]:
    """Each use of a private cloudclients name in Python *source*: imports in both forms, attribute
    access (``cloudclients._guard.check``) and dotted strings (``mock.patch("cloudclients._x.y")``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cloudclients":
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [f"line {node.lineno}: from {node.module} import {n.rsplit('.', 1)[1]}"
                      for n in names if _private(n)]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute):
            parts, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and _private(".".join([inner.id, *reversed(parts)])) \
                    and not _private(".".join([inner.id, *reversed(parts[1:])])):
                found.append(f"line {node.lineno}: {'.'.join([inner.id, *reversed(parts)])}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and PRIVATE.search(node.value):
            found.append(f"line {node.lineno}: {PRIVATE.search(node.value).group(0)!r}")  # type: ignore[union-attr]
    return found


@pytest.mark.parametrize("source", [
    "from cloudclients import _guard",
    "from cloudclients import CloudClients, _guard",
    "from cloudclients._emulators import free_port",
    "from cloudclients.testing._plugin import TEST_PROJECT",
    "import cloudclients._guard",
    "import cloudclients\ncloudclients._guard.check('x')",
    "import cloudclients.testing\ncloudclients.testing._plugin.TEST_PROJECT",
    "mock.patch('cloudclients._google.credentials.default')",
])
def test_the_check_catches_every_form(source: str) -> None:
    """Both import forms, attribute access and patch strings are caught; one finding each."""
    assert len(private_uses(source)) == 1, private_uses(source)


def test_the_check_lets_public_and_dunder_names_pass() -> None:
    """cloudclients.__all__, cloudclients.testing and comments mentioning a module are fine."""
    assert private_uses("import cloudclients, cloudclients.testing\n"
                        "x = cloudclients.__all__ + cloudclients.testing.__all__  # see cloudclients._google\n") == []


def test_no_private_cloudclients_names_outside_the_package() -> None:
    """tests/, bench/, examples/ (Python) and README.md, docs/, examples' READMEs (text) use public
    names only."""
    offenders = []
    for path in sorted(p for d in ("tests", "bench", "examples") for p in (ROOT / d).rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # its examples of what is caught
        offenders += [f"{path.relative_to(ROOT)} {use}" for use in private_uses(path.read_text())]
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").rglob("*.md")]
    for path in texts:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line):
                offenders.append(f"{path.relative_to(ROOT)} line {number}: {line.strip()}")
    assert offenders == [], "use the public names (cloudclients, cloudclients.testing):\n" + "\n".join(offenders)
