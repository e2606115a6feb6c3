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
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import _parsers as parse
from ._parsers import PROJECT_ID_RE, InvalidValueError, Parser

__all__ = ["PREFIX", "ConfigError", "Settings", "Spec", "check_project_for", "setting_error"]

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

#: Values of ``CLOUDCLIENTS_PUSH_AUTH`` (see :func:`cloudclients.push_endpoint`).
PUSH_AUTH_MODES = ("oidc", "oidc_or_emulator", "platform", "unauthenticated")

_BOOL_FIX = "use True or False (strings 'true'/'false', '1'/'0', 'yes'/'no' are accepted too)"


class ConfigError(ValueError):
    """A ``CLOUDCLIENTS_*`` setting (or its environment fallback) is invalid.

    The message names the key, the offending value, where it came from and
    how to fix it. Raised by :meth:`cloudclients.CloudClients.init_app` and
    :meth:`Settings.from_mapping`.
    """


# -- the declaration ------------------------------------------------------------------


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
    if shown is None:
        shown = "unset" if default is None else f"`{default!r}`"
    spec = Spec(PREFIX + name, parse, rule, fix, env, shown)
    return dataclasses.field(default=default, metadata={"spec": spec})


# -- the settings -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated, immutable cloudclients settings for one app.

    Build it with :meth:`from_mapping`; the constructor does no validation.
    One attribute per ``CLOUDCLIENTS_*`` key (see the README's table).
    """

    project: str | None = _setting(
        "PROJECT", None, parse.project_id, env="GOOGLE_CLOUD_PROJECT",
        shown="unset: discovered from the credentials or the metadata server",
        rule="a project **ID**: 6–30 of `a-z 0-9 -`, starting with a letter (IDs only the emulators accept, "
             "e.g. `test`, need the Pub/Sub emulator, and a Storage client that is not emulated refuses them)",
        fix="use the project ID (6-30 characters: lowercase letters, digits and hyphens, starting with a "
            "letter), not the project name or number",
    )
    pubsub_emulator_host: str | None = _setting(
        "PUBSUB_EMULATOR_HOST", None, parse.pubsub_host, env="PUBSUB_EMULATOR_HOST",
        rule="`HOST:PORT`, no scheme; set = Pub/Sub emulator mode",
        fix="use HOST:PORT, for example 127.0.0.1:8085 (no scheme, no path)",
    )
    storage_emulator_host: str | None = _setting(
        "STORAGE_EMULATOR_HOST", None, parse.storage_url, env="STORAGE_EMULATOR_HOST",
        rule="`http(s)://HOST[:PORT]`; set = Storage emulator mode",
        fix="use a URL with a scheme, for example http://127.0.0.1:9023",
    )
    credentials_file: str | None = _setting(
        "CREDENTIALS_FILE", None, parse.credentials_file, env="GOOGLE_APPLICATION_CREDENTIALS", shown="unset (ADC)",
        rule="a readable Google credentials JSON file (a regular file; a service-account key's `private_key` must "
             "parse, checked by `init_app` unless both clients are emulated)",
        fix="point it at a readable service-account or ADC JSON key file, or unset it to use Application "
            "Default Credentials",
    )
    production: bool = _setting(
        "PRODUCTION", False, parse.boolean, rule="bool; `True` refuses any emulator host", fix=_BOOL_FIX,
    )
    publish_timeout: float = _setting(
        "PUBLISH_TIMEOUT", 10.0, parse.seconds(0.0, 600.0, low_open=True), shown="`10`",
        rule="seconds, > 0 and ≤ 600: total time a publish may take, retries included (a request waits at most "
             "this + 2 s, inside gunicorn's default 30 s timeout)",
        fix="set it to a number of seconds greater than 0 and at most 600",
    )
    batch_max_messages: int = _setting(
        "BATCH_MAX_MESSAGES", 100, parse.whole(1, MAX_BATCH_MESSAGES),
        rule="1–1000 (the service's per-request limit)",
        fix="set it to a whole number from 1 to 1000 (the Pub/Sub service's per-request limit)",
    )
    batch_max_bytes: int = _setting(
        "BATCH_MAX_BYTES", 1_000_000, parse.whole(1, MAX_BATCH_BYTES),
        rule="1–10,000,000 (the service's per-request limit)",
        fix="set it to a whole number from 1 to 10000000 (the Pub/Sub service's per-request limit)",
    )
    batch_max_latency: float = _setting(
        "BATCH_MAX_LATENCY", 0.01, parse.seconds(0.0, 60.0), rule="seconds, 0–60",
        fix="set it to a number of seconds at least 0 and at most 60",
    )
    enable_message_ordering: bool = _setting(
        "ENABLE_MESSAGE_ORDERING", False, parse.boolean, rule="bool", fix=_BOOL_FIX,
    )
    storage_pool_size: int = _setting(
        "STORAGE_POOL_SIZE", 32, parse.whole(1, 1024),
        rule="1–1024 HTTP connections (requests' default of 10 is too small for threaded workers)",
        fix="set it to a whole number from 1 to 1024",
    )
    storage_timeout: float = _setting(
        "STORAGE_TIMEOUT", 10.0, parse.seconds(0.0, 600.0, low_open=True), shown="`10`",
        rule="seconds, > 0 and ≤ 600: the longest a Storage HTTP request waits, and how long an unreachable "
             "Storage is retried before the call fails",
        fix="set it to a number of seconds greater than 0 and at most 600",
    )
    shutdown_timeout: float = _setting(
        "SHUTDOWN_TIMEOUT", 10.0, parse.seconds(0.0, 600.0), shown="`10`",
        rule="seconds, 0–600: how long closing waits for outstanding publishes",
        fix="set it to a number of seconds at least 0 and at most 600",
    )
    exit_handlers: bool = _setting(
        "EXIT_HANDLERS", True, parse.boolean,
        rule="bool: close (flush) the clients at interpreter exit and on SIGTERM", fix=_BOOL_FIX,
    )
    publish_confirm: str = _setting(
        "PUBLISH_CONFIRM", "before_response", parse.one_of(*PUBLISH_CONFIRM_MODES), shown="`before_response`",
        rule="`before_response` or `after_response`: when `cloudclients.publish()` is confirmed",
        fix="set it to one of those",
    )
    # Receiving side and operations (push endpoint, health checks): see docs/receiving.md.
    push_auth: str | None = _setting(
        "PUSH_AUTH", None, parse.one_of(*PUSH_AUTH_MODES),
        shown="`oidc` when `PUSH_AUDIENCE` is set, else unset",
        rule="how push requests are authenticated: `oidc` (verify the Google-signed token), `oidc_or_emulator` "
             "(the same, but tokenless pushes pass while a Pub/Sub emulator is configured), `platform` (Cloud Run "
             "IAM or IAP in front already checked it) or `unauthenticated` (only with a Pub/Sub emulator). Unset "
             "and without an audience, push endpoints refuse every request",
        fix="set it to one of those (see docs/receiving.md)",
    )
    push_audience: str | None = _setting(
        "PUSH_AUDIENCE", None, parse.word,
        rule="one word, no spaces (usually the push endpoint's URL): the `aud` the OIDC token must carry",
        fix="set it to the audience your push subscription's OIDC token is issued for, usually the endpoint "
            "URL (https://app.example.com/push)",
    )
    push_service_account: str | None = _setting(
        "PUSH_SERVICE_ACCOUNT", None, parse.email,
        rule="an email; the token must be issued to it; needs an OIDC mode",
        fix="set it to the push subscription's service-account email "
            "(push@my-project.iam.gserviceaccount.com), or unset it",
    )
    push_certs_url: str = _setting(
        "PUSH_CERTS_URL", GOOGLE_CERTS_URL, parse.certs_url, shown=f"Google's `{GOOGLE_CERTS_URL}`",
        rule="an `https://` URL serving Google's certificate formats (plain `http://` only to a loopback host, "
             "for tests)",
        fix=f"leave it unset (Google's {GOOGLE_CERTS_URL}) or use an https:// URL (plain http:// only on a "
            "loopback host, for tests)",
    )
    health_timeout: float = _setting(
        "HEALTH_TIMEOUT", 2.0, parse.seconds(0.0, 30.0, low_open=True), shown="`2`",
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
        :param environ: the environment to fall back on; defaults to :data:`os.environ`.
        Keys are read from *config* as ``CLOUDCLIENTS_*``, then from *environ*
        under the same names; the four standard Google variables
        (``GOOGLE_CLOUD_PROJECT``, ``PUBSUB_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``,
        ``GOOGLE_APPLICATION_CREDENTIALS``) are honoured in *config* and *environ*
        too, after their ``CLOUDCLIENTS_*`` key. Nothing here touches the network:
        a project left unset is discovered later, in the process that uses it.

        :raises ConfigError: for the first invalid or unknown value.
        """
        reader = _Reader(config, os.environ if environ is None else environ)
        reader.refuse_unknown_keys()
        values: dict[str, Any] = {}
        for name, spec in _specs():
            source = reader.lookup(name, spec)
            if source is not None and not _ignored(name, source, values):
                values[name] = source.parse(spec)
        for rule in _RULES:
            rule(values, reader.sources)
        return cls(**values)

    @staticmethod
    def table() -> str:
        """The configuration table (Markdown) rendered from the settings' declarations:
        key, environment fallback, default and rule of every ``CLOUDCLIENTS_*`` key."""
        return _table()


def setting_error(name: str, config: Mapping[str, Any], problem: str, environ: Mapping[str, str] | None = None,
                  ) -> ConfigError:
    """A :class:`ConfigError` about the setting *name* found invalid after reading (by a check
    that needs more than its parser): it names the key, the value and where it came from, as
    :meth:`Settings.from_mapping` does, and the setting's fix."""
    spec = _spec(name)
    source = _Reader(config, os.environ if environ is None else environ).lookup(name, spec)
    if source is None:
        return ConfigError(f"{spec.key} {problem}. Fix: {spec.fix}.")
    return source.error(problem, spec.fix)


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
        """The raw value of *spec*, first found of: ``app.config[CLOUDCLIENTS_X]``, the standard
        variable in ``app.config``, ``CLOUDCLIENTS_X`` in the environment, the standard variable
        in the environment; ``None`` when unset."""
        source = self._config_source(spec.key)
        if spec.env is not None:
            alias = self._config_source(spec.env)
            if source is not None and alias is not None and _plain(source.value) != _plain(alias.value):
                raise ConfigError(
                    f"{spec.key}={source.value!r} and {spec.env}={alias.value!r} (both from app.config) disagree. "
                    f"Fix: set only {spec.key}."
                )
            source = source or alias
        for key in (spec.key, spec.env):
            if source is None and key is not None and not _blank(self._env.get(key)):
                source = _Source(key, self._env[key], f"from the environment; {spec.key} is not in app.config")
        if source is not None:
            self.sources[name] = source
        return source

    def _config_source(self, key: str) -> _Source | None:
        value = self._config.get(key)
        return None if _blank(value) else _Source(key, value, "from app.config")


def _blank(value: Any) -> bool:
    # Unset, empty, or only whitespace (an empty Kubernetes secret is "\n").
    return value is None or (isinstance(value, str) and not value.strip())


def _plain(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _ignored(name: str, source: _Source, earlier: Mapping[str, Any]) -> bool:
    # Every client talks to an emulator: ADC is never consulted, so an ambient
    # GOOGLE_APPLICATION_CREDENTIALS in the environment must not break local runs.
    return (name == "credentials_file" and source.origin.startswith("from the environment")
            and bool(earlier.get("pubsub_emulator_host")) and bool(earlier.get("storage_emulator_host")))


# -- rules between settings --------------------------------------------------------------------

#: ``rule(values, sources)``: raises ConfigError; may fill in a value derived from others.
Rule = Callable[[dict[str, Any], Mapping[str, _Source]], None]


def _no_emulator_in_production(values: dict[str, Any], sources: Mapping[str, _Source]) -> None:
    if not values.get("production"):
        return
    for name in ("storage_emulator_host", "pubsub_emulator_host"):
        if values.get(name):
            raise sources[name].error(
                f"configures an emulator, but {PREFIX}PRODUCTION=True declares this app a production deployment",
                f"unset {sources[name].key} in production, or set {PREFIX}PRODUCTION=False for local and test runs",
            )


def _project_for_the_service(values: dict[str, Any], sources: Mapping[str, _Source]) -> None:
    # The emulators accept any project ID ("test", "my_project"); the service does not. Pub/Sub
    # is what nearly every app uses, so such an ID needs the Pub/Sub emulator here; a real Storage
    # next to an emulated Pub/Sub is refused when the Storage client is built (check_project_for).
    project = values.get("project")
    if project is None or values.get("pubsub_emulator_host") or PROJECT_ID_RE.fullmatch(project):
        return
    spec = _spec("project")
    if not values.get("storage_emulator_host"):
        raise sources["project"].error("is not a valid project ID", spec.fix)
    raise sources["project"].error(
        "is a project ID only the emulators accept, and Pub/Sub is not emulated (only Storage is)",
        f"use a real project ID such as 'test-project' (the Storage emulator accepts it too), or set "
        f"{PREFIX}PUBSUB_EMULATOR_HOST",
    )


def check_project_for(settings: Settings, service: str) -> None:
    """Refuse to build a client for *service* (``"Pub/Sub"`` or ``"Storage"``) that is not
    emulated when the configured project is an ID only the emulators accept.

    :raises ConfigError: naming the key, the value and the fix.
    """
    emulated = settings.pubsub_emulator if service == "Pub/Sub" else settings.storage_emulator
    project = settings.project
    if project is None or emulated or PROJECT_ID_RE.fullmatch(project):
        return
    key = "STORAGE_EMULATOR_HOST" if service == "Storage" else "PUBSUB_EMULATOR_HOST"
    raise ConfigError(
        f"{PREFIX}PROJECT={project!r} (or GOOGLE_CLOUD_PROJECT) is a project ID only the emulators accept, but "
        f"{service} is not emulated: the service would refuse it. Fix: use a real project ID such as "
        f"'test-project' (the emulators accept it too), or set {PREFIX}{key}."
    )


def _push_auth(values: dict[str, Any], sources: Mapping[str, _Source]) -> None:
    mode = values.get("push_auth")
    if mode is None and values.get("push_audience"):
        values["push_auth"] = mode = "oidc"
    if mode == "unauthenticated" and not values.get("pubsub_emulator_host"):
        raise sources["push_auth"].error(
            "accepts pushes without a token, which is only allowed against the Pub/Sub emulator, and no emulator "
            "is configured",
            f"use 'oidc_or_emulator' (tokens verified in production, tokenless pushes accepted from the emulator), "
            f"'platform' behind Cloud Run IAM or IAP, or set {PREFIX}PUBSUB_EMULATOR_HOST for local runs",
        )
    if values.get("push_service_account") and mode not in ("oidc", "oidc_or_emulator"):
        raise sources["push_service_account"].error(
            "is set but no token is verified"
            + (f" ({PREFIX}PUSH_AUTH={mode!r})" if mode else f" ({PREFIX}PUSH_AUDIENCE is not set)"),
            f"set {PREFIX}PUSH_AUDIENCE too (the audience of the push subscription's OIDC token), or unset it",
        )


_RULES: tuple[Rule, ...] = (_no_emulator_in_production, _project_for_the_service, _push_auth)


def _spec(name: str) -> Spec:
    return dict(_specs())[name]
