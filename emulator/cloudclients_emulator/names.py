"""Resource names: ``projects/{project}/{collection}/{id}``, validated as the service does."""

from __future__ import annotations

import re

from .errors import ApiError, Code

__all__ = ["check_name", "check_project"]

# 3-255 characters, starting with a letter, from [A-Za-z0-9-_.~+%], not "goog...".
# Matched with fullmatch: "$" would also match before a trailing newline ("topic\n").
_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")


def check_project(name: str) -> str:
    """Return the project id of ``projects/{project}``."""
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "projects" or not parts[1]:
        raise ApiError(Code.INVALID_ARGUMENT, f"Invalid project: (project={name})")
    return parts[1]


def check_name(name: str, collection: str) -> str:
    """Validate ``projects/P/{collection}/ID`` and return it.

    :raises ApiError: INVALID_ARGUMENT, worded like the service.
    """
    parts = name.split("/")
    ok = (
        len(parts) == 4 and parts[0] == "projects" and bool(parts[1]) and parts[2] == collection
        and bool(_ID.fullmatch(parts[3])) and not parts[3].lower().startswith("goog")
    )
    if not ok:
        raise ApiError(Code.INVALID_ARGUMENT, f"Invalid [{collection}] name: (name={name})")
    return name
