"""Resource names: ``projects/{project}/{collection}/{id}``, validated as the service does."""

from __future__ import annotations

import re

from .errors import ApiError, Code

__all__ = ["check_name", "check_project"]

# 3-255 characters, starting with a letter, from [A-Za-z0-9-_.~+%], not "goog...".
# Matched with fullmatch: "$" would also match before a trailing newline ("topic\n").
_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")


# Project ids. The service's are 6-30 characters of lowercase letters, digits and hyphens, starting
# with a letter; it also takes project numbers and domain-scoped ids ("example.com:my-project").
# Emulators are commonly used with ids the service would refuse ("test", "my_project", "TEST"), and
# Google's emulator accepts any string at all, so this accepts every id made of ASCII letters, digits
# and "-", "_", ".", ":" (up to 100, starting with a letter or digit), and refuses what no project id
# has: whitespace, control characters, non-ASCII letters, "/" and other punctuation.
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.:]{0,99}")


def _project_ok(project: str) -> bool:
    return _PROJECT.fullmatch(project) is not None


def check_project(name: str) -> str:
    """Return the project id of ``projects/{project}``.

    :raises ApiError: INVALID_ARGUMENT for anything else, or an id no project has.
    """
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "projects" or not _project_ok(parts[1]):
        raise ApiError(Code.INVALID_ARGUMENT, f"Invalid project: (project={name})")
    return parts[1]


def check_name(name: str, collection: str) -> str:
    """Validate ``projects/P/{collection}/ID`` and return it.

    :raises ApiError: INVALID_ARGUMENT, worded like the service.
    """
    parts = name.split("/")
    ok = (
        len(parts) == 4 and parts[0] == "projects" and _project_ok(parts[1]) and parts[2] == collection
        and bool(_ID.fullmatch(parts[3])) and not parts[3].lower().startswith("goog")
    )
    if not ok:
        raise ApiError(Code.INVALID_ARGUMENT, f"Invalid [{collection}] name: (name={name})")
    return name
