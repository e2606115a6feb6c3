"""Where a setting's raw value comes from, and errors that say so.

A setting is declared by a :class:`Spec` (in ``_config``); :class:`Reader` finds its
raw value — ``app.config`` first, then the environment, each under the
``CLOUDCLIENTS_*`` key and then the standard Google variable — and remembers
where it came from, so that every :class:`ConfigError` names the key, the value,
its origin and the fix. Which settings exist is ``_config``'s business, not this
module's.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Mapping
from typing import Any

from ._parsers import InvalidValueError, Parser

__all__ = ["PREFIX", "ConfigError", "Reader", "Source", "Spec"]

PREFIX = "CLOUDCLIENTS_"


class ConfigError(ValueError):
    """A ``CLOUDCLIENTS_*`` setting (or its environment fallback) is invalid.

    The message names the key, the offending value, where it came from and
    how to fix it. Raised by :meth:`cloudclients.CloudClients.init_app` and
    :meth:`Settings.from_mapping`.
    """


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


@dataclasses.dataclass(frozen=True)
class Source:
    """A setting's raw value and where it came from, so that errors can say so."""

    spec: Spec
    #: The key it was found under: the spec's key or its environment fallback.
    key: str
    value: Any
    origin: str

    @property
    def from_environment(self) -> bool:
        return self.origin.startswith("from the environment")

    def error(self, problem: str, fix: str | None = None) -> ConfigError:
        """``KEY=VALUE (origin) problem. Fix: fix.`` — the setting's own fix unless *fix* is given."""
        return ConfigError(f"{self.key}={self.value!r} ({self.origin}) {problem}. Fix: {fix or self.spec.fix}.")

    def parse(self) -> Any:
        try:
            return self.spec.parse(self.value)
        except InvalidValueError as exc:
            raise self.error(exc.problem, exc.fix) from None


class Reader:
    """Finds raw values in ``app.config`` and the environment; :attr:`sources` keeps what it found."""

    def __init__(self, config: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self._config = config
        self._env = env
        #: The sources found, by setting name (for rules between settings).
        self.sources: dict[str, Source] = {}

    def refuse_unknown_keys(self, known: Collection[str]) -> None:
        """:raises ConfigError: for a ``CLOUDCLIENTS_*`` key in ``app.config`` that is not in *known*."""
        for key in self._config:
            if isinstance(key, str) and key.startswith(PREFIX) and key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(sorted(known))
                raise ConfigError(
                    f"{key}={self._config[key]!r} (from app.config) is not a cloudclients "
                    f"setting. Fix: remove it or rename it; {hint}"
                )

    def lookup(self, name: str, spec: Spec) -> Source | None:
        """The raw value of *spec*, first found of: ``app.config[CLOUDCLIENTS_X]``, the standard
        variable in ``app.config``, ``CLOUDCLIENTS_X`` in the environment, the standard variable
        in the environment; ``None`` when unset."""
        source = self._config_source(spec, spec.key)
        if spec.env is not None:
            alias = self._config_source(spec, spec.env)
            if source is not None and alias is not None and _plain(source.value) != _plain(alias.value):
                raise ConfigError(
                    f"{spec.key}={source.value!r} and {spec.env}={alias.value!r} (both from app.config) disagree. "
                    f"Fix: set only {spec.key}."
                )
            source = source or alias
        for key in (spec.key, spec.env):
            if source is None and key is not None and not _blank(self._env.get(key)):
                source = Source(spec, key, self._env[key], f"from the environment; {spec.key} is not in app.config")
        if source is not None:
            self.sources[name] = source
        return source

    def _config_source(self, spec: Spec, key: str) -> Source | None:
        value = self._config.get(key)
        return None if _blank(value) else Source(spec, key, value, "from app.config")


def _blank(value: Any) -> bool:
    # Unset, empty, or only whitespace (an empty Kubernetes secret is "\n").
    return value is None or (isinstance(value, str) and not value.strip())


def _plain(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value
