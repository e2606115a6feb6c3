"""Settings: read once from ``app.config`` (and the environment), validated, frozen.

Each setting is declared once, as a field of :class:`Settings` whose metadata
is its :class:`Spec` — key, environment fallback, default, parser and the rule
in words. That one declaration drives reading, validation, the error messages
and the README's configuration table (:meth:`Settings.table`; a test keeps the
README in sync). Rules between settings follow the fields, in ``_RULES``.

Every rule runs at ``init_app`` — in the process that loads the app, before a
worker is forked and long before the first request — and a failure names the
key, the value, where it came from and the fix. Credentials-file *contents*
are never read into a message: only the path is named.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PREFIX", "ConfigError", "Settings", "Spec"]

PREFIX = "CLOUDCLIENTS_"

# Pub/Sub service limits for one Publish request (see the Pub/Sub quotas page):
# at most 1000 messages and 10 MB per request.
MAX_BATCH_MESSAGES = 1000
MAX_BATCH_BYTES = 10_000_000

#: Where Google publishes the certificates that sign its OIDC ID tokens (the
#: tokens Pub/Sub push attaches), as a ``{key id: PEM certificate}`` JSON object.
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"

#: Values of ``CLOUDCLIENTS_PUBLISH_CONFIRM`` (see :func:`cloudclients.publish`).
PUBLISH_CONFIRM_MODES = ("before_response", "after_response")

# Project IDs: 6-30 chars, lowercase letters, digits, hyphens, start with a
# letter, no trailing hyphen; legacy domain-scoped IDs ("example.com:proj")
# are still accepted by Google APIs.
_PROJECT_RE = re.compile(r"^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A ``CLOUDCLIENTS_*`` setting (or its environment fallback) is invalid.

    The message names the key, the offending value, where it came from and
    how to fix it. Raised by :meth:`cloudclients.CloudClients.init_app` and
    :meth:`Settings.from_mapping`.
    """


ConfigError.__module__ = "cloudclients"


# -- the declaration ------------------------------------------------------------------


class InvalidValueError(Exception):
    """Raised by a parser: *problem* completes "KEY=VALUE (origin) …"; *fix* overrides the spec's."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


#: ``parse(raw value)``: the typed value, or :class:`InvalidValueError`.
Parser = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Spec:
    """One setting: everything about it, in one place."""

    #: The ``app.config`` key, ``CLOUDCLIENTS_`` included.
    key: str
    parse: Parser
    #: The rule in words, for the README table (Markdown).
    rule: str
    #: What to do about a bad value: completes "Fix: …".
    fix: str
    #: The environment variable read when the key is not in ``app.config``.
    env: str | None = None
    #: The default as the README shows it.
    shown_default: str = "unset"


def _setting(name: str, default: Any, parse: Parser, *, rule: str, fix: str, env: str | None = None,
             shown: str | None = None) -> Any:
    spec = Spec(PREFIX + name, parse, rule, fix, env, f"`{default!r}`" if shown is None else shown)
    return dataclasses.field(default=default, metadata={"spec": spec})


# -- parsers ----------------------------------------------------------------------------


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidValueError("is not a boolean")


def _seconds(low: float, high: float, *, low_open: bool = False) -> Parser:
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

    return parse


def _whole(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        parsed: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            parsed = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            parsed = int(value)
        if parsed is None:
            raise InvalidValueError("is not a whole number")
        if not low <= parsed <= high:
            raise InvalidValueError("is out of range")
        return parsed

    return parse


def _one_of(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        close = difflib.get_close_matches(str(value).strip().lower(), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidValueError(f"is not one of {', '.join(map(repr, choices))}{hint}")

    return parse


def _project(value: Any) -> str:
    if not isinstance(value, str) or not _PROJECT_RE.match(value):
        raise InvalidValueError("is not a valid project ID")
    return value


def _pubsub_host(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValueError("is not a string")
    if "://" in value or "/" in value:
        raise InvalidValueError("must not contain a scheme or path")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not _HOST_RE.match(host):
        raise InvalidValueError("has no port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidValueError(f"has an invalid port {port!r}")
    return value


def _storage_url(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValueError("is not a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or "://" not in value:
        raise InvalidValueError("has no http:// or https:// scheme")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.path not in ("", "/") or parts.query:
        raise InvalidValueError("is not a plain scheme://host[:port] URL")
    return value.rstrip("/")


def _credentials_file(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidValueError("is not a path")
    path = os.fspath(value)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        # exc.strerror only (never the file contents).
        raise InvalidValueError(f"cannot be read: {exc.strerror}") from None
    try:
        info = json.loads(text)
    except ValueError:
        # Deliberately no detail: JSON errors quote the text around the fault,
        # and this file holds a private key.
        raise InvalidValueError("is not valid JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("type"), str):
        raise InvalidValueError("has no 'type' field; it is not a Google credentials file")
    if info["type"] == "service_account":
        missing = [f for f in ("client_email", "private_key", "token_uri") if not info.get(f)]
        if missing:
            raise InvalidValueError("is a service-account key without " + ", ".join(missing))
    return path


def _word(value: Any) -> str:
    if not isinstance(value, str) or not value or re.search(r"\s", value):
        raise InvalidValueError("is not a single word without spaces")
    return value


def _email(value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL_RE.match(value):
        raise InvalidValueError("is not an email address")
    return value


def _certs_url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValueError("is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        # Signing keys fetched over plain HTTP could be swapped in transit:
        # every token would then verify.
        raise InvalidValueError("uses plain http:// to a non-loopback host")
    return str(value)


# -- the settings -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated, immutable cloudclients settings for one app.

    Build it with :meth:`from_mapping`; the constructor does no validation.
    One attribute per ``CLOUDCLIENTS_*`` key (see the README's table).
    """

    project: str = _setting(
        "PROJECT", "", _project, env="GOOGLE_CLOUD_PROJECT", shown="— (required)",
        rule="a project **ID**: 6–30 of `a-z 0-9 -`, starting with a letter",
        fix="use the project ID (6-30 characters: lowercase letters, digits and hyphens, starting with a "
            "letter), not the project name or number",
    )
    pubsub_emulator_host: str | None = _setting(
        "PUBSUB_EMULATOR_HOST", None, _pubsub_host, env="PUBSUB_EMULATOR_HOST", shown="unset",
        rule="`HOST:PORT`, no scheme; set = Pub/Sub emulator mode",
        fix="use HOST:PORT, for example 127.0.0.1:8085 (no scheme, no path)",
    )
    storage_emulator_host: str | None = _setting(
        "STORAGE_EMULATOR_HOST", None, _storage_url, env="STORAGE_EMULATOR_HOST", shown="unset",
        rule="`http(s)://HOST[:PORT]`; set = Storage emulator mode",
        fix="use a URL with a scheme, for example http://127.0.0.1:9023",
    )
    credentials_file: str | None = _setting(
        "CREDENTIALS_FILE", None, _credentials_file, env="GOOGLE_APPLICATION_CREDENTIALS", shown="unset (ADC)",
        rule="a readable Google credentials JSON file",
        fix="point it at a readable service-account or ADC JSON key file, or unset it to use Application "
            "Default Credentials",
    )
    production: bool = _setting(
        "PRODUCTION", False, _boolean, shown="`False`", rule="bool; `True` refuses any emulator host",
        fix="use True or False (strings 'true'/'false', '1'/'0', 'yes'/'no' are accepted too)",
    )
    publish_timeout: float = _setting(
        "PUBLISH_TIMEOUT", 30.0, _seconds(0.0, 600.0, low_open=True), shown="`30`",
        rule="seconds, > 0 and ≤ 600: total time a publish may take, retries included",
        fix="set it to a number of seconds greater than 0 and at most 600",
    )
    batch_max_messages: int = _setting(
        "BATCH_MAX_MESSAGES", 100, _whole(1, MAX_BATCH_MESSAGES), shown="`100`",
        rule="1–1000 (the service's per-request limit)",
        fix="set it to a whole number from 1 to 1000 (the Pub/Sub service's per-request limit)",
    )
    batch_max_bytes: int = _setting(
        "BATCH_MAX_BYTES", 1_000_000, _whole(1, MAX_BATCH_BYTES), shown="`1000000`",
        rule="1–10,000,000 (the service's per-request limit)",
        fix="set it to a whole number from 1 to 10000000 (the Pub/Sub service's per-request limit)",
    )
    batch_max_latency: float = _setting(
        "BATCH_MAX_LATENCY", 0.01, _seconds(0.0, 60.0), shown="`0.01`", rule="seconds, 0–60",
        fix="set it to a number of seconds at least 0 and at most 60",
    )
    enable_message_ordering: bool = _setting(
        "ENABLE_MESSAGE_ORDERING", False, _boolean, shown="`False`", rule="bool",
        fix="use True or False (strings 'true'/'false', '1'/'0', 'yes'/'no' are accepted too)",
    )
    storage_pool_size: int = _setting(
        "STORAGE_POOL_SIZE", 32, _whole(1, 1024), shown="`32`",
        rule="1–1024 HTTP connections (requests' default of 10 is too small for threaded workers)",
        fix="set it to a whole number from 1 to 1024",
    )
    shutdown_timeout: float = _setting(
        "SHUTDOWN_TIMEOUT", 10.0, _seconds(0.0, 600.0), shown="`10`",
        rule="seconds, 0–600: how long closing waits for outstanding publishes",
        fix="set it to a number of seconds at least 0 and at most 600",
    )
    exit_handlers: bool = _setting(
        "EXIT_HANDLERS", True, _boolean, shown="`True`",
        rule="bool: close (flush) the clients at interpreter exit and on SIGTERM",
        fix="use True or False (strings 'true'/'false', '1'/'0', 'yes'/'no' are accepted too)",
    )
    publish_confirm: str = _setting(
        "PUBLISH_CONFIRM", "before_response", _one_of(*PUBLISH_CONFIRM_MODES), shown="`before_response`",
        rule="`before_response` or `after_response`: when `cloudclients.publish()` is confirmed",
        fix="set it to one of those",
    )
    # Receiving side and operations (push endpoint, health checks): see docs/receiving.md.
    push_audience: str | None = _setting(
        "PUSH_AUDIENCE", None, _word, shown="unset",
        rule="one word, no spaces (usually the push endpoint's URL); set = every push must carry a "
             "Google-signed OIDC token for this audience",
        fix="set it to the audience your push subscription's OIDC token is issued for, usually the endpoint "
            "URL (https://app.example.com/push)",
    )
    push_service_account: str | None = _setting(
        "PUSH_SERVICE_ACCOUNT", None, _email, shown="unset",
        rule="an email; the token must be issued to it; needs `PUSH_AUDIENCE`",
        fix="set it to the push subscription's service-account email "
            "(push@my-project.iam.gserviceaccount.com), or unset it",
    )
    push_allow_unauthenticated: bool = _setting(
        "PUSH_ALLOW_UNAUTHENTICATED", False, _boolean, shown="`False`",
        rule="bool; `True` accepts pushes without a token, refused unless a Pub/Sub emulator host is set",
        fix="use True or False (strings 'true'/'false', '1'/'0', 'yes'/'no' are accepted too)",
    )
    push_certs_url: str = _setting(
        "PUSH_CERTS_URL", GOOGLE_CERTS_URL, _certs_url, shown=f"Google's `{GOOGLE_CERTS_URL}`",
        rule="an `https://` URL (plain `http://` only to a loopback host, for tests)",
        fix=f"leave it unset (Google's {GOOGLE_CERTS_URL}) or use an https:// URL (plain http:// only on a "
            "loopback host, for tests)",
    )
    health_timeout: float = _setting(
        "HEALTH_TIMEOUT", 2.0, _seconds(0.0, 30.0, low_open=True), shown="`2`",
        rule="seconds, > 0 and ≤ 30: how long the health checks wait, all checks together",
        fix="set it to a number of seconds greater than 0 and at most 30",
    )

    @property
    def pubsub_emulator(self) -> bool:
        """True when Pub/Sub clients talk to an emulator."""
        return self.pubsub_emulator_host is not None

    @property
    def storage_emulator(self) -> bool:
        """True when the Storage client talks to an emulator."""
        return self.storage_emulator_host is not None

    def redacted(self) -> dict[str, Any]:
        """Return the settings as a dict safe to print or log.

        Nothing in :class:`Settings` is a secret (the credentials *file* is a
        path, its contents are never loaded here), but the path is shortened to
        its name so logs do not reveal directory layouts.
        """
        data = dataclasses.asdict(self)
        if self.credentials_file:
            data["credentials_file"] = "…/" + os.path.basename(self.credentials_file)
        return data

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings.

        :param config: usually ``app.config``; keys start with ``CLOUDCLIENTS_``.
        :param environ: fallbacks (``GOOGLE_CLOUD_PROJECT``, ``PUBSUB_EMULATOR_HOST``,
            ``STORAGE_EMULATOR_HOST``, ``GOOGLE_APPLICATION_CREDENTIALS``);
            defaults to :data:`os.environ`.
        :raises ConfigError: for the first invalid, unknown or missing value.
        """
        reader = _Reader(config, os.environ if environ is None else environ)
        reader.refuse_unknown_keys()
        values: dict[str, Any] = {}
        for name, spec in _specs():
            source = reader.lookup(name, spec)
            if source is not None and not _ignored(name, source, values):
                values[name] = source.parse(spec)
        if "project" not in values:
            raise ConfigError(
                f"No Google Cloud project configured: {PREFIX}PROJECT is not set in "
                "app.config and GOOGLE_CLOUD_PROJECT is not set in the environment. "
                f"Fix: set app.config['{PREFIX}PROJECT'] = 'your-project-id'."
            )
        for rule in _RULES:
            rule(values, reader.sources)
        return cls(**values)

    @staticmethod
    def table() -> str:
        """The configuration table (Markdown) rendered from the settings' declarations:
        key, environment fallback, default and rule of every ``CLOUDCLIENTS_*`` key."""
        return _table()


def _specs() -> Iterator[tuple[str, Spec]]:
    for f in dataclasses.fields(Settings):
        yield f.name, f.metadata["spec"]


KNOWN_KEYS = frozenset(spec.key for _, spec in _specs())


def _table() -> str:
    lines = ["| key | environment fallback | default | rule |", "|---|---|---|---|"]
    for _, spec in _specs():
        env = f"`{spec.env}`" if spec.env else "—"
        lines.append(f"| `{spec.key}` | {env} | {spec.shown_default} | {spec.rule} |")
    return "\n".join(lines) + "\n"


# -- reading ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Source:
    """A raw value and where it came from, so that errors can say so."""

    key: str
    value: Any
    origin: str

    def error(self, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.key}={self.value!r} ({self.origin}) {problem}. Fix: {fix}.")

    def parse(self, spec: Spec) -> Any:
        try:
            return spec.parse(self.value)
        except InvalidValueError as exc:
            raise self.error(exc.problem, exc.fix or spec.fix) from None


class _Reader:
    def __init__(self, config: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self._config = config
        self._env = env
        #: The sources read, by field name (for rules between settings).
        self.sources: dict[str, _Source] = {}

    def refuse_unknown_keys(self) -> None:
        for key in self._config:
            if isinstance(key, str) and key.startswith(PREFIX) and key not in KNOWN_KEYS:
                close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
                hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(sorted(KNOWN_KEYS))
                raise ConfigError(
                    f"{key}={self._config[key]!r} (from app.config) is not a cloudclients "
                    f"setting. Fix: remove it or rename it; {hint}"
                )

    def lookup(self, name: str, spec: Spec) -> _Source | None:
        source: _Source | None = None
        value = self._config.get(spec.key)
        if value is not None and value != "":
            source = _Source(spec.key, value, "from app.config")
        elif spec.env is not None and self._env.get(spec.env):
            source = _Source(spec.env, self._env[spec.env], f"from the environment; {spec.key} is not set")
        if source is not None:
            self.sources[name] = source
        return source


def _ignored(name: str, source: _Source, earlier: Mapping[str, Any]) -> bool:
    # Every client talks to an emulator: ADC is never consulted, so an ambient
    # GOOGLE_APPLICATION_CREDENTIALS must not break local runs.
    return (name == "credentials_file" and source.key.startswith("GOOGLE_")
            and bool(earlier.get("pubsub_emulator_host")) and bool(earlier.get("storage_emulator_host")))


# -- rules between settings --------------------------------------------------------------------

Rule = Callable[[Mapping[str, Any], Mapping[str, _Source]], None]


def _no_emulator_in_production(values: Mapping[str, Any], sources: Mapping[str, _Source]) -> None:
    if not values.get("production"):
        return
    for name in ("storage_emulator_host", "pubsub_emulator_host"):
        if values.get(name):
            raise sources[name].error(
                f"configures an emulator, but {PREFIX}PRODUCTION=True declares this app a production deployment",
                f"unset {sources[name].key} in production, or set {PREFIX}PRODUCTION=False for local and test runs",
            )


def _account_needs_audience(values: Mapping[str, Any], sources: Mapping[str, _Source]) -> None:
    if values.get("push_service_account") and not values.get("push_audience"):
        raise sources["push_service_account"].error(
            f"is set but {PREFIX}PUSH_AUDIENCE is not, so no token would be verified",
            f"set {PREFIX}PUSH_AUDIENCE too (the audience of the push subscription's OIDC token)",
        )


def _unauthenticated_only_with_emulator(values: Mapping[str, Any], sources: Mapping[str, _Source]) -> None:
    if values.get("push_allow_unauthenticated") and not values.get("pubsub_emulator_host"):
        raise sources["push_allow_unauthenticated"].error(
            "accepts pushes without a token, which is only allowed against the Pub/Sub emulator (it cannot sign "
            "tokens), and no emulator is configured",
            f"set {PREFIX}PUSH_AUDIENCE to verify tokens, or set {PREFIX}PUBSUB_EMULATOR_HOST for local runs",
        )


_RULES: tuple[Rule, ...] = (_no_emulator_in_production, _account_needs_audience, _unauthenticated_only_with_emulator)
