"""Parsers for setting values: each returns the typed value or raises :class:`InvalidValueError`.

Used by the declarations in ``_config``. The parsers that take bounds or choices
(:func:`seconds`, :func:`whole`, :func:`one_of`, and :data:`boolean`) are
:class:`Worded`: they say what they accept in the words the README's table and the
error messages use, derived from the same bounds they check, so neither can drift.

A parser never quotes anything but the value it was given (which ``_config``
shows as ``KEY=VALUE``) — in particular never the contents of a credentials
file. Strings arrive from ``app.config``, ``.env`` files and Kubernetes secrets,
so leading and trailing whitespace (a secret's trailing newline) is stripped
before parsing; whitespace inside a value is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import stat
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "InvalidValueError",
    "Parser",
    "Worded",
    "boolean",
    "certs_url",
    "credentials_file",
    "email",
    "one_of",
    "project_id",
    "pubsub_host",
    "seconds",
    "storage_url",
    "whole",
    "word",
]

# Patterns are used with fullmatch (``$`` would also match before a trailing newline).
# Project IDs: 6-30 chars, lowercase letters, digits, hyphens, start with a
# letter, no trailing hyphen; legacy domain-scoped IDs ("example.com:proj")
# are still accepted by Google APIs.
PROJECT_ID_RE = re.compile(r"(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
# What the emulators accept in a resource name's project segment ("test", "my_project").
EMULATOR_PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit() accepts "²"
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: Largest credentials file read (real ones are 2-3 KB).
_MAX_CREDENTIALS_BYTES = 1 << 20


class InvalidValueError(ValueError):
    """Raised by a parser: *problem* completes "KEY=VALUE (origin) …"; *fix*, if
    given, replaces the setting's usual fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


#: ``parse(raw value)``: the typed value, or :class:`InvalidValueError`.
Parser = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Worded:
    """A parser that says what it accepts, in words derived from what it checks."""

    parse: Parser
    #: What it accepts, for the README's table (Markdown): ``seconds, > 0 and ≤ 600``.
    rule: str
    #: What to do about a bad value; completes "Fix: …": ``set it to a number of seconds …``.
    fix: str

    def __call__(self, value: Any) -> Any:
        return self.parse(value)


def _valid_host(host: str) -> bool:
    """A DNS name, an IPv4 address or (without brackets) an IPv6 address."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME_RE.fullmatch(host))


def _text(value: Any, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise InvalidValueError(f"is not {what}")
    return value.strip()


# Whitespace, control and format characters (a newline, a tab, U+00A0, U+200B …): none
# belongs inside a host, a URL, an ID or an address, and some are invisible in a log or
# silently dropped by the standard library (urlsplit removes tabs and newlines).
_INVISIBLE = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp", "Zs"})


def _single(value: Any, what: str = "a string") -> str:
    """*value* stripped, refused if whitespace or a control character is left inside it."""
    text = _text(value, what)
    for char in text:
        if char.isspace() or unicodedata.category(char) in _INVISIBLE:
            raise InvalidValueError(f"contains whitespace or a control character (U+{ord(char):04X}) inside it "
                                    "(only surrounding whitespace, such as a secret's trailing newline, is stripped)")
    return text


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidValueError("is not a boolean")


boolean = Worded(_boolean, "bool",
                 "use True or False (strings 'true'/'false', '1'/'0', 'yes'/'no' are accepted too)")


def _number(value: float) -> str:
    return f"{value:g}"  # 10.0 → "10", 0.01 → "0.01"


def seconds(low: float, high: float, *, low_open: bool = False) -> Worded:
    """A number of seconds from *low* (excluded when *low_open*) to *high*."""

    def parse(value: Any) -> float:
        parsed: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parsed = float(value)
        elif isinstance(value, str):
            try:
                parsed = float(value.strip())
            except ValueError:
                parsed = None
        if parsed is None or math.isnan(parsed):
            raise InvalidValueError("is not a number")
        if parsed < low or (low_open and parsed == low) or parsed > high:
            raise InvalidValueError("is out of range")
        return parsed

    lo, hi = _number(low), _number(high)
    if low_open:
        return Worded(parse, f"seconds, > {lo} and ≤ {hi}",
                      f"set it to a number of seconds greater than {lo} and at most {hi}")
    return Worded(parse, f"seconds, {lo}–{hi}", f"set it to a number of seconds at least {lo} and at most {hi}")


def whole(low: int, high: int, *, why: str = "") -> Worded:
    """A whole number from *low* to *high*; *why* (the bounds' reason) is added to both texts."""

    def parse(value: Any) -> int:
        parsed: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            parsed = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            parsed = int(value)
        if parsed is None:
            raise InvalidValueError("is not a whole number")
        if not low <= parsed <= high:
            raise InvalidValueError("is out of range")
        return parsed

    because = f" ({why})" if why else ""
    # The table groups digits (10,000,000); the fix does not, as the value must be written without.
    return Worded(parse, f"{low:,}–{high:,}{because}", f"set it to a whole number from {low} to {high}{because}")


def one_of(*choices: str) -> Worded:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        close = difflib.get_close_matches(str(value).strip().lower(), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidValueError(f"is not one of {', '.join(map(repr, choices))}{hint}")

    quoted = [f"`{choice}`" for choice in choices]
    return Worded(parse, ", ".join(quoted[:-1]) + " or " + quoted[-1], "set it to one of those")


def project_id(value: Any) -> str:
    """A project ID as the emulators accept it; ``_config`` holds the real service's
    stricter rule against it when no emulator is configured."""
    text = _single(value, "a project ID string")
    if not EMULATOR_PROJECT_RE.fullmatch(text):
        raise InvalidValueError("is not a valid project ID")
    return text


def pubsub_host(value: Any) -> str:
    text = _single(value)
    if "://" in text or "/" in text:
        raise InvalidValueError("must not contain a scheme or path")
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise InvalidValueError("has no port")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not _valid_host(bare) or (":" in bare) != host.startswith("["):
        raise InvalidValueError(f"has an invalid host {host!r}")
    if not _PORT_RE.fullmatch(port) or not 0 < int(port) < 65536:
        raise InvalidValueError(f"has an invalid port {port!r}")
    return text


def storage_url(value: Any) -> str:
    text = _single(value)
    if "://" not in text:
        raise InvalidValueError("has no http:// or https:// scheme")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises for a non-numeric or out-of-range port
        hostname = parts.hostname  # None for "http://[::1" … once urlsplit accepted it
    except ValueError:
        raise InvalidValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidValueError("has no http:// or https:// scheme")
    if "@" in parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidValueError("is not a plain scheme://host[:port] URL")
    if not hostname or not _valid_host(hostname):
        raise InvalidValueError("has an invalid host")
    if port == 0:
        raise InvalidValueError("has an invalid port 0")
    return text.rstrip("/")


def credentials_file(value: Any) -> str:
    """A readable Google credentials JSON file; its contents never reach a message."""
    if isinstance(value, str):
        value = value.strip()
    elif not isinstance(value, os.PathLike):
        raise InvalidValueError("is not a path")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise InvalidValueError("is not a path")
    if "\x00" in path:
        raise InvalidValueError("contains a NUL character")
    raw = _read_regular_file(path)
    if len(raw) > _MAX_CREDENTIALS_BYTES:
        raise InvalidValueError("is larger than 1 MiB; it is not a Google credentials file")
    try:
        # Deliberately no detail from either error: UnicodeDecodeError carries
        # the raw bytes and JSON errors quote the text around the fault, and
        # this file holds a private key.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidValueError("is not UTF-8 text (binary, or another encoding such as UTF-16)") from None
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidValueError("is not valid JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("type"), str):
        raise InvalidValueError("has no 'type' field; it is not a Google credentials file")
    if info["type"] == "service_account":
        missing = [f for f in ("client_email", "private_key", "token_uri") if not info.get(f)]
        if missing:
            raise InvalidValueError("is a service-account key without " + ", ".join(missing))
    return path


def _read_regular_file(path: str) -> bytes:
    """The first bytes of the regular file at *path*.

    Only a regular file is opened: reading a FIFO would block until something
    writes to it (``init_app`` hung), a device or a socket is no key file. The
    file is opened non-blocking and checked again on the open descriptor, so a
    FIFO swapped in between cannot block either.
    """
    try:
        mode = os.stat(path).st_mode
    except (ValueError, UnicodeError):  # a NUL, or a lone surrogate the file system cannot encode
        raise InvalidValueError("is not a usable path (it has characters the file system cannot encode)") from None
    except OSError as exc:
        # exc.strerror only (never the file contents).
        raise InvalidValueError(f"cannot be read: {exc.strerror}") from None
    _require_regular(mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InvalidValueError(f"cannot be read: {exc.strerror}") from None
    try:
        _require_regular(os.fstat(fd).st_mode)
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # the file object owns it now
            return fh.read(_MAX_CREDENTIALS_BYTES + 1)
    except OSError as exc:
        raise InvalidValueError(f"cannot be read: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _require_regular(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise InvalidValueError("is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise InvalidValueError("is not a regular file (a FIFO, socket or device)")


def word(value: Any) -> str:
    text = _single(value, "a single word without spaces")
    if not text or re.search(r"\s", text):
        raise InvalidValueError("is not a single word without spaces")
    return text


def email(value: Any) -> str:
    text = _single(value, "an email address")
    if not _EMAIL_RE.fullmatch(text):
        raise InvalidValueError("is not an email address")
    return text


def certs_url(value: Any) -> str:
    text = _single(value, "an http(s) URL")
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise InvalidValueError("is not an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not hostname or re.search(r"\s", text):
        raise InvalidValueError("is not an http(s) URL")
    if parts.scheme == "http" and hostname not in _LOOPBACK:
        # Signing keys fetched over plain HTTP could be swapped in transit:
        # every token would then verify.
        raise InvalidValueError("uses plain http:// to a non-loopback host")
    return text
