"""Settings: read once from ``app.config`` (and the environment), validated, frozen.

Each setting is declared once, as a field of :class:`Settings` whose metadata
is its :class:`Spec` — key, environment fallback, default, parser and the rule
in words. That one declaration drives reading, validation, the error messages
and the README's configuration table (:meth:`Settings.table`; a test keeps the
README in sync): the default shown is the field's default, and a parser with
bounds or choices words them itself (``_parsers.Worded``), so the range is
written once. Rules between settings follow the fields, in ``_RULES``; where a
raw value comes from is ``_config_sources``'s job.

Every rule runs at ``init_app`` — in the process that loads the app, before a
worker is forked and long before the first request — and a failure names the
key, the value, where it came from and the fix. Credentials-file *contents*
are never read into a message: only the path is named.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import _parsers as parse
from ._config_sources import PREFIX, ConfigError, Reader, Source, Spec
from ._parsers import PROJECT_ID_RE, Parser, Worded

__all__ = ["PREFIX", "ConfigError", "Settings", "Spec", "check_project_for", "setting_error"]

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

_PER_REQUEST_LIMIT = "the Pub/Sub service's per-request limit"


# -- the declaration ------------------------------------------------------------------


def _setting(name: str, default: Any, parse: Parser, *, rule: str = "", fix: str = "", env: str | None = None,
             default_note: str = "") -> Any:
    """A field of :class:`Settings` declared by its spec. A :class:`~cloudclients._parsers.Worded`
    parser's words open the rule (*rule* adds what the setting is for) and are the fix unless
    *fix* says more; *default_note* follows the default shown in the README."""
    if isinstance(parse, Worded):
        rule = f"{parse.rule}: {rule}" if rule else parse.rule
        fix = fix or parse.fix
    shown = _shown(default) + (f" ({default_note})" if default_note else "")
    spec = Spec(PREFIX + name, parse, rule, fix, env, shown)
    return dataclasses.field(default=default, metadata={"spec": spec})


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, float) and default.is_integer():
        return f"`{default:g}`"  # 10.0 as `10`, as a user writes it
    return f"`{default}`"


# -- the settings -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated, immutable cloudclients settings for one app.

    Build it with :meth:`from_mapping`; the constructor does no validation.
    One attribute per ``CLOUDCLIENTS_*`` key (see the README's table).
    """

    project: str | None = _setting(
        "PROJECT", None, parse.project_id, env="GOOGLE_CLOUD_PROJECT",
        default_note="discovered from the credentials or the metadata server",
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
        "CREDENTIALS_FILE", None, parse.credentials_file, env="GOOGLE_APPLICATION_CREDENTIALS", default_note="ADC",
        rule="a readable Google credentials JSON file (a regular file; a service-account key's `private_key` must "
             "parse, checked by `init_app` unless both clients are emulated)",
        fix="point it at a readable service-account or ADC JSON key file, or unset it to use Application "
            "Default Credentials",
    )
    production: bool = _setting("PRODUCTION", False, parse.boolean, rule="`True` refuses any emulator host")
    publish_timeout: float = _setting(
        "PUBLISH_TIMEOUT", 10.0, parse.seconds(0.0, 600.0, low_open=True),
        rule="total time a publish may take, retries included (a request waits at most this + 2 s, inside "
             "gunicorn's default 30 s timeout)",
    )
    batch_max_messages: int = _setting(
        "BATCH_MAX_MESSAGES", 100, parse.whole(1, MAX_BATCH_MESSAGES, why=_PER_REQUEST_LIMIT),
    )
    batch_max_bytes: int = _setting(
        "BATCH_MAX_BYTES", 1_000_000, parse.whole(1, MAX_BATCH_BYTES, why=_PER_REQUEST_LIMIT),
    )
    batch_max_latency: float = _setting("BATCH_MAX_LATENCY", 0.01, parse.seconds(0.0, 60.0))
    enable_message_ordering: bool = _setting("ENABLE_MESSAGE_ORDERING", False, parse.boolean)
    storage_pool_size: int = _setting(
        "STORAGE_POOL_SIZE", 32, parse.whole(1, 1024),
        rule="HTTP connections in the pool (requests' default of 10 is too small for threaded workers)",
    )
    storage_timeout: float = _setting(
        "STORAGE_TIMEOUT", 10.0, parse.seconds(0.0, 600.0, low_open=True),
        rule="the longest a Storage HTTP request waits, and how long an unreachable Storage is retried before the "
             "call fails",
    )
    shutdown_timeout: float = _setting(
        "SHUTDOWN_TIMEOUT", 10.0, parse.seconds(0.0, 600.0), rule="how long closing waits for outstanding publishes",
    )
    exit_handlers: bool = _setting(
        "EXIT_HANDLERS", True, parse.boolean, rule="close (flush) the clients at interpreter exit and on SIGTERM",
    )
    publish_confirm: str = _setting(
        "PUBLISH_CONFIRM", "before_response", parse.one_of(*PUBLISH_CONFIRM_MODES),
        rule="when `cloudclients.publish()` is confirmed",
    )
    # Receiving side and operations (push endpoint, health checks): see docs/receiving.md.
    push_auth: str | None = _setting(
        "PUSH_AUTH", None, parse.one_of(*PUSH_AUTH_MODES), default_note="`oidc` when `PUSH_AUDIENCE` is set",
        rule="how push requests are authenticated. `oidc` verifies the Google-signed token; `oidc_or_emulator` "
             "does the same, but lets tokenless pushes pass while a Pub/Sub emulator is configured; `platform`: "
             "Cloud Run IAM or IAP in front already checked it; `unauthenticated`: only with a Pub/Sub emulator. "
             "Unset and without an audience, push endpoints refuse every request",
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
        "PUSH_CERTS_URL", GOOGLE_CERTS_URL, parse.certs_url, default_note="Google's",
        rule="an `https://` URL serving Google's certificate formats (plain `http://` only to a loopback host, "
             "for tests)",
        fix="leave it unset (Google's certificates) or use an https:// URL (plain http:// only on a loopback "
            "host, for tests)",
    )
    health_timeout: float = _setting(
        "HEALTH_TIMEOUT", 2.0, parse.seconds(0.0, 30.0, low_open=True),
        rule="how long the health checks wait, all checks together",
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
        reader = Reader(config, os.environ if environ is None else environ)
        reader.refuse_unknown_keys(KNOWN_KEYS)
        values: dict[str, Any] = {}
        sources = reader.sources
        for name, spec in _specs():
            reader.lookup(name, spec)
            _apply_rules(name, values, sources)
            if name in sources:
                values[name] = sources[name].parse()
        _apply_rules(None, values, sources)
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
    source = Reader(config, os.environ if environ is None else environ).lookup(name, spec)
    if source is None:
        return ConfigError(f"{spec.key} {problem}. Fix: {spec.fix}.")
    return source.error(problem)


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


# -- rules between settings --------------------------------------------------------------------

#: ``rule(values, sources)``: raises ConfigError; may fill in a value derived from others, or
#: drop a source before its setting is parsed.
Rule = Callable[[dict[str, Any], dict[str, Source]], None]


def _ambient_credentials(values: dict[str, Any], sources: dict[str, Source]) -> None:
    # Every client talks to an emulator: ADC is never consulted, so an ambient
    # GOOGLE_APPLICATION_CREDENTIALS in the environment must not break local runs.
    source = sources.get("credentials_file")
    if (source is not None and source.from_environment and values.get("pubsub_emulator_host")
            and values.get("storage_emulator_host")):
        del sources["credentials_file"]


def _no_emulator_in_production(values: dict[str, Any], sources: dict[str, Source]) -> None:
    if not values.get("production"):
        return
    for name in ("storage_emulator_host", "pubsub_emulator_host"):
        if values.get(name):
            raise sources[name].error(
                f"configures an emulator, but {PREFIX}PRODUCTION=True declares this app a production deployment",
                f"unset {sources[name].key} in production, or set {PREFIX}PRODUCTION=False for local and test runs",
            )


def _project_for_the_service(values: dict[str, Any], sources: dict[str, Source]) -> None:
    # The emulators accept any project ID ("test", "my_project"); the service does not. Pub/Sub
    # is what nearly every app uses, so such an ID needs the Pub/Sub emulator here; a real Storage
    # next to an emulated Pub/Sub is refused when the Storage client is built (check_project_for).
    project = values.get("project")
    if project is None or values.get("pubsub_emulator_host") or PROJECT_ID_RE.fullmatch(project):
        return
    if not values.get("storage_emulator_host"):
        raise sources["project"].error("is not a valid project ID")
    raise sources["project"].error(
        "is a project ID only the emulators accept, and Pub/Sub is not emulated (only Storage is)",
        f"use a real project ID such as 'test-project' (the Storage emulator accepts it too), or set "
        f"{PREFIX}PUBSUB_EMULATOR_HOST",
    )


def _push_auth(values: dict[str, Any], sources: dict[str, Source]) -> None:
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


#: The rules between settings, in order, each with when it runs: just before the named setting is
#: parsed (the rule may drop its source: the setting is then unset), or, for ``None``, once every
#: setting is parsed.
_RULES: tuple[tuple[str | None, Rule], ...] = (
    ("credentials_file", _ambient_credentials),
    (None, _no_emulator_in_production),
    (None, _project_for_the_service),
    (None, _push_auth),
)


def _apply_rules(when: str | None, values: dict[str, Any], sources: dict[str, Source]) -> None:
    for before, rule in _RULES:
        if before == when:
            rule(values, sources)


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




def _spec(name: str) -> Spec:
    return dict(_specs())[name]
