"""Settings: read once from ``app.config`` (and the environment), validated, frozen.

Every rule lives here so that a bad value fails at ``init_app`` — in the
process that loads the app, before a worker is forked and long before the first
request — with a message that names the key, the value and the fix.

Credentials-file *contents* are never read into a message: only the path is
named, and parse errors are reported without echoing the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PREFIX", "ConfigError", "Settings"]

PREFIX = "CLOUDCLIENTS_"

# Pub/Sub service limits for one Publish request (see the Pub/Sub quotas page):
# at most 1000 messages and 10 MB per request.
MAX_BATCH_MESSAGES = 1000
MAX_BATCH_BYTES = 10_000_000

# Project IDs: 6-30 chars, lowercase letters, digits, hyphens, start with a
# letter, no trailing hyphen; legacy domain-scoped IDs ("example.com:proj")
# are still accepted by Google APIs.
_PROJECT_RE = re.compile(r"^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)$")

#: Where Google publishes the certificates that sign its OIDC ID tokens (the
#: tokens Pub/Sub push attaches), as a ``{key id: PEM certificate}`` JSON object.
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A ``CLOUDCLIENTS_*`` setting (or its environment fallback) is invalid.

    The message names the key, the offending value and how to fix it. Raised by
    :meth:`cloudclients.CloudClients.init_app` and :meth:`Settings.from_mapping`.
    """


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated, immutable cloudclients settings for one app.

    Build it with :meth:`from_mapping`; the constructor does no validation.
    """

    project: str
    pubsub_emulator_host: str | None = None
    storage_emulator_host: str | None = None
    credentials_file: str | None = None
    production: bool = False
    publish_timeout: float = 30.0
    batch_max_messages: int = 100
    batch_max_bytes: int = 1_000_000
    batch_max_latency: float = 0.01
    enable_message_ordering: bool = False
    storage_pool_size: int = 32
    shutdown_timeout: float = 10.0
    exit_handlers: bool = True
    publish_confirm: str = "before_response"
    # Receiving side and operations (push endpoint, health checks): see docs/receiving.md.
    push_audience: str | None = None
    push_service_account: str | None = None
    push_allow_unauthenticated: bool = False
    push_certs_url: str = GOOGLE_CERTS_URL
    health_timeout: float = 2.0

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
    def from_mapping(
        cls, config: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Read and validate settings.

        :param config: usually ``app.config``; keys start with ``CLOUDCLIENTS_``.
        :param environ: fallbacks (``GOOGLE_CLOUD_PROJECT``, ``PUBSUB_EMULATOR_HOST``,
            ``STORAGE_EMULATOR_HOST``, ``GOOGLE_APPLICATION_CREDENTIALS``);
            defaults to :data:`os.environ`.
        :raises ConfigError: for the first invalid, unknown or missing value.
        """
        env = os.environ if environ is None else environ
        r = _Reader(config, env)
        r.reject_unknown_keys()

        production = r.boolean("PRODUCTION", False)
        pubsub_host = r.pubsub_host()
        storage_host = r.storage_url()
        if production and (pubsub_host or storage_host):
            key, value, src = r.last_emulator_source()
            raise ConfigError(
                f"{key}={value!r} ({src}) configures an emulator, but "
                f"{PREFIX}PRODUCTION=True declares this app a production deployment. "
                f"Fix: unset {key} in production, or set {PREFIX}PRODUCTION=False "
                "for local and test runs."
            )

        settings = cls(
            project=r.project(),
            pubsub_emulator_host=pubsub_host,
            storage_emulator_host=storage_host,
            credentials_file=r.credentials_file(
                emulator_only=bool(pubsub_host and storage_host)
            ),
            production=production,
            publish_timeout=r.number("PUBLISH_TIMEOUT", 30.0, low=0.0, low_open=True, high=600.0),
            batch_max_messages=r.integer("BATCH_MAX_MESSAGES", 100, 1, MAX_BATCH_MESSAGES),
            batch_max_bytes=r.integer("BATCH_MAX_BYTES", 1_000_000, 1, MAX_BATCH_BYTES),
            batch_max_latency=r.number("BATCH_MAX_LATENCY", 0.01, low=0.0, high=60.0),
            enable_message_ordering=r.boolean("ENABLE_MESSAGE_ORDERING", False),
            storage_pool_size=r.integer("STORAGE_POOL_SIZE", 32, 1, 1024),
            shutdown_timeout=r.number("SHUTDOWN_TIMEOUT", 10.0, low=0.0, high=600.0),
            exit_handlers=r.boolean("EXIT_HANDLERS", True),
            publish_confirm=r.choice("PUBLISH_CONFIRM", "before_response", PUBLISH_CONFIRM_MODES),
            **r.receiving(pubsub_emulator=pubsub_host is not None),
        )
        return settings


KNOWN_KEYS = frozenset(
    PREFIX + k
    for k in (
        "PROJECT",
        "PUBSUB_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "CREDENTIALS_FILE",
        "PRODUCTION",
        "PUBLISH_TIMEOUT",
        "BATCH_MAX_MESSAGES",
        "BATCH_MAX_BYTES",
        "BATCH_MAX_LATENCY",
        "ENABLE_MESSAGE_ORDERING",
        "STORAGE_POOL_SIZE",
        "SHUTDOWN_TIMEOUT",
        "EXIT_HANDLERS",
        "PUBLISH_CONFIRM",
        "PUSH_AUDIENCE",
        "PUSH_SERVICE_ACCOUNT",
        "PUSH_ALLOW_UNAUTHENTICATED",
        "PUSH_CERTS_URL",
        "HEALTH_TIMEOUT",
    )
)

#: Values of ``CLOUDCLIENTS_PUBLISH_CONFIRM`` (see :func:`cloudclients.publish`).
PUBLISH_CONFIRM_MODES = ("before_response", "after_response")


class _Reader:
    """Looks values up with their provenance, so errors can say where a value came from."""

    def __init__(self, config: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self._config = config
        self._env = env
        self._emulator_sources: list[tuple[str, str, str]] = []

    # -- lookup -------------------------------------------------------------

    def _get(self, name: str, env_key: str | None = None) -> tuple[str, Any, str] | None:
        key = PREFIX + name
        value = self._config.get(key)
        if value is not None and value != "":
            return key, value, "from app.config"
        if env_key is not None:
            env_value = self._env.get(env_key)
            if env_value:
                return env_key, env_value, f"from the environment; {key} is not set"
        return None

    def reject_unknown_keys(self) -> None:
        for key in self._config:
            if isinstance(key, str) and key.startswith(PREFIX) and key not in KNOWN_KEYS:
                close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
                hint = f"did you mean {close[0]}?" if close else (
                    "known keys: " + ", ".join(sorted(KNOWN_KEYS))
                )
                raise ConfigError(
                    f"{key}={self._config[key]!r} (from app.config) is not a cloudclients "
                    f"setting. Fix: remove it or rename it; {hint}"
                )

    # -- typed readers ----------------------------------------------------

    def boolean(self, name: str, default: bool) -> bool:
        found = self._get(name)
        if found is None:
            return default
        key, value, src = found
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(
            f"{key}={value!r} ({src}) is not a boolean. Fix: use True or False "
            "(strings 'true'/'false', '1'/'0', 'yes'/'no' are accepted too)."
        )

    def number(
        self,
        name: str,
        default: float,
        *,
        low: float,
        high: float,
        low_open: bool = False,
    ) -> float:
        found = self._get(name)
        if found is None:
            return default
        key, value, src = found
        parsed: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parsed = float(value)
        elif isinstance(value, str):
            try:
                parsed = float(value.strip())
            except ValueError:
                parsed = None
        bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
        rule = f"a number of seconds {bound} and at most {high:g}"
        if parsed is None or math.isnan(parsed):
            raise ConfigError(f"{key}={value!r} ({src}) is not a number. Fix: set it to {rule}.")
        if parsed < low or (low_open and parsed == low) or parsed > high:
            raise ConfigError(f"{key}={value!r} ({src}) is out of range. Fix: set it to {rule}.")
        return parsed

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        found = self._get(name)
        if found is None:
            return default
        key, value, src = found
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        close = difflib.get_close_matches(str(value).strip().lower(), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{key}={value!r} ({src}) is not one of {', '.join(map(repr, choices))}{hint}. "
            f"Fix: set it to one of those."
        )

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        found = self._get(name)
        if found is None:
            return default
        key, value, src = found
        parsed: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            parsed = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            parsed = int(value)
        rule = f"a whole number from {low} to {high}"
        if parsed is None:
            raise ConfigError(f"{key}={value!r} ({src}) is not a whole number. Fix: set it to {rule}.")
        if not low <= parsed <= high:
            raise ConfigError(
                f"{key}={value!r} ({src}) is out of range. Fix: set it to {rule}"
                + (" (the Pub/Sub service's per-request limit)." if "BATCH" in key else ".")
            )
        return parsed

    # -- specific settings ------------------------------------------------

    def project(self) -> str:
        found = self._get("PROJECT", "GOOGLE_CLOUD_PROJECT")
        if found is None:
            raise ConfigError(
                f"No Google Cloud project configured: {PREFIX}PROJECT is not set in "
                "app.config and GOOGLE_CLOUD_PROJECT is not set in the environment. "
                f"Fix: set app.config['{PREFIX}PROJECT'] = 'your-project-id'."
            )
        key, value, src = found
        if not isinstance(value, str) or not _PROJECT_RE.match(value):
            raise ConfigError(
                f"{key}={value!r} ({src}) is not a valid project ID. Fix: use the "
                "project ID (6-30 characters: lowercase letters, digits and hyphens, "
                "starting with a letter), not the project name or number."
            )
        return value

    def pubsub_host(self) -> str | None:
        found = self._get("PUBSUB_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")
        if found is None:
            return None
        key, value, src = found
        fix = "Fix: use HOST:PORT, for example 127.0.0.1:8085 (no scheme, no path)."
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} ({src}) is not a string. {fix}")
        host, sep, port = value.rpartition(":")
        if "://" in value or "/" in value:
            raise ConfigError(f"{key}={value!r} ({src}) must not contain a scheme or path. {fix}")
        if not sep or not host or not _HOST_RE.match(host):
            raise ConfigError(f"{key}={value!r} ({src}) has no port. {fix}")
        _check_port(key, value, src, port, fix)
        self._emulator_sources.append((key, value, src))
        return value

    def storage_url(self) -> str | None:
        found = self._get("STORAGE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")
        if found is None:
            return None
        key, value, src = found
        fix = "Fix: use a URL with a scheme, for example http://127.0.0.1:9023."
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} ({src}) is not a string. {fix}")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or "://" not in value:
            raise ConfigError(f"{key}={value!r} ({src}) has no http:// or https:// scheme. {fix}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or parts.path not in ("", "/") or parts.query:
            raise ConfigError(f"{key}={value!r} ({src}) is not a plain scheme://host[:port] URL. {fix}")
        self._emulator_sources.append((key, value, src))
        return value.rstrip("/")

    def receiving(self, *, pubsub_emulator: bool) -> dict[str, Any]:
        """The push-endpoint and health settings, checked against each other."""
        audience = self._text("PUSH_AUDIENCE", "the audience your push subscription's OIDC token is "
                              "issued for, usually the endpoint URL (https://app.example.com/push)")
        account = self._text("PUSH_SERVICE_ACCOUNT", "the service-account email the push subscription "
                             "signs with (push@my-project.iam.gserviceaccount.com)")
        if account is not None and not _EMAIL_RE.match(account):
            raise ConfigError(
                f"{PREFIX}PUSH_SERVICE_ACCOUNT={account!r} (from app.config) is not an email address. "
                "Fix: set it to the push subscription's service-account email, or unset it."
            )
        if account is not None and audience is None:
            raise ConfigError(
                f"{PREFIX}PUSH_SERVICE_ACCOUNT={account!r} (from app.config) is set but "
                f"{PREFIX}PUSH_AUDIENCE is not, so no token would be verified. Fix: set "
                f"{PREFIX}PUSH_AUDIENCE too (the audience of the push subscription's OIDC token)."
            )
        allow = self.boolean("PUSH_ALLOW_UNAUTHENTICATED", False)
        if allow and not pubsub_emulator:
            raise ConfigError(
                f"{PREFIX}PUSH_ALLOW_UNAUTHENTICATED=True (from app.config) accepts pushes without a "
                "token, which is only allowed against the Pub/Sub emulator (it cannot sign tokens), "
                f"and no emulator is configured. Fix: set {PREFIX}PUSH_AUDIENCE to verify tokens, or "
                f"set {PREFIX}PUBSUB_EMULATOR_HOST for local runs."
            )
        return {
            "push_audience": audience,
            "push_service_account": account,
            "push_allow_unauthenticated": allow,
            "push_certs_url": self._certs_url(),
            "health_timeout": self.number("HEALTH_TIMEOUT", 2.0, low=0.0, low_open=True, high=30.0),
        }

    def _text(self, name: str, what: str) -> str | None:
        found = self._get(name)
        if found is None:
            return None
        key, value, src = found
        if not isinstance(value, str) or not value or re.search(r"\s", value):
            raise ConfigError(
                f"{key}={value!r} ({src}) is not a single word without spaces. Fix: set it to {what}."
            )
        return value

    def _certs_url(self) -> str:
        found = self._get("PUSH_CERTS_URL")
        if found is None:
            return GOOGLE_CERTS_URL
        key, value, src = found
        fix = (f"Fix: leave it unset (Google's {GOOGLE_CERTS_URL}) or use an https:// URL "
               "(plain http:// only on a loopback host, for tests).")
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key}={value!r} ({src}) is not an http(s) URL. {fix}")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            # Signing keys fetched over plain HTTP could be swapped in transit:
            # every token would then verify.
            raise ConfigError(f"{key}={value!r} ({src}) uses plain http:// to a non-loopback host. {fix}")
        return str(value)

    def last_emulator_source(self) -> tuple[str, str, str]:
        return self._emulator_sources[-1]

    def credentials_file(self, *, emulator_only: bool) -> str | None:
        found = self._get("CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")
        if found is None:
            return None
        key, value, src = found
        if emulator_only and key.startswith("GOOGLE_"):
            # Every client talks to an emulator: ADC is never consulted, so an
            # ambient GOOGLE_APPLICATION_CREDENTIALS must not break local runs.
            return None
        fix = (
            "Fix: point it at a readable service-account or ADC JSON key file, "
            "or unset it to use Application Default Credentials."
        )
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{key}={value!r} ({src}) is not a path. {fix}")
        path = os.fspath(value)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            # exc.strerror only (never the file contents).
            raise ConfigError(f"{key}={path!r} ({src}) cannot be read: {exc.strerror}. {fix}") from None
        try:
            info = json.loads(text)
        except ValueError:
            # Deliberately no detail: JSON errors quote the text around the fault,
            # and this file holds a private key.
            raise ConfigError(f"{key}={path!r} ({src}) is not valid JSON. {fix}") from None
        if not isinstance(info, dict) or not isinstance(info.get("type"), str):
            raise ConfigError(f"{key}={path!r} ({src}) has no 'type' field; it is not a Google credentials file. {fix}")
        if info["type"] == "service_account":
            missing = [f for f in ("client_email", "private_key", "token_uri") if not info.get(f)]
            if missing:
                raise ConfigError(
                    f"{key}={path!r} ({src}) is a service-account key without "
                    + ", ".join(missing) + f". {fix}"
                )
        return path


def _check_port(key: str, value: str, src: str, port: str, fix: str) -> None:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}={value!r} ({src}) has an invalid port {port!r}. {fix}")
