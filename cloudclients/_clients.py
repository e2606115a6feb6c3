"""``ClientRegistry``: the registry with the built-in Google Cloud clients.

:class:`~cloudclients._registry.Registry` knows no client; this subclass adds
the three built-in kinds — ``publisher``, ``subscriber``, ``storage`` — as
:meth:`ClientRegistry.from_settings` and typed properties. The factories
themselves live in ``_google``, the only package that imports the Google
libraries at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ._project import ProjectSource
from ._registry import DEFAULT_CLOSE_TIMEOUT, Registry

if TYPE_CHECKING:  # typing only: the runtime Google imports live in _google
    from google.cloud import storage
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    from ._config import Settings

__all__ = ["ClientRegistry"]


class ClientRegistry(Registry):
    """One client of each kind per process, built lazily, rebuilt after fork.

    ``ClientRegistry(name)`` is empty (register your own factories);
    :meth:`from_settings` registers the built-in Pub/Sub and Storage clients.
    Every method is documented on the base class: ``register``, ``get``,
    ``peek``, ``stats``, ``ping``, ``on_close``, ``close``, ``state``.

    :param project: the project for short names and the Storage client: a
        project ID, or a :class:`~cloudclients._project.ProjectSource` that
        discovers it on first use.
    """

    def __init__(
        self,
        name: str = "cloudclients",
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        project: str | ProjectSource | None = None,
    ) -> None:
        super().__init__(name, close_timeout=close_timeout)
        if not isinstance(project, ProjectSource):
            project = ProjectSource(project, lambda: None, "pass project= to ClientRegistry.")
        self._project = project

    @property
    def project(self) -> str:
        """The Google Cloud project of these clients: configured, else discovered on
        first use in this process (credentials file, ADC, the metadata server).

        :raises ConfigError: if there is none anywhere.
        """
        return self._project.get()

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "cloudclients") -> ClientRegistry:
        """Return a registry with the built-in ``publisher``, ``subscriber`` and
        ``storage`` factories configured from *settings* (nothing is built yet).

        Its :attr:`close_timeout` is the settings' ``shutdown_timeout``.
        """
        # Imported here, not at the top: the Google libraries take ~0.3 s to
        # import, and ``import cloudclients`` (CLI start-up, a preload master
        # that only reads its settings) should not pay for them.
        from ._google.builtin import builtin_clients
        from ._google.credentials import discover_project

        project = ProjectSource(settings.project, lambda: discover_project(settings), _unset_fix(settings))
        registry = cls(name, close_timeout=settings.shutdown_timeout, project=project)
        for kind, spec in builtin_clients(settings, project.get).items():
            registry.register(kind, spec.factory, close=spec.close, metrics=spec.metrics, ping=spec.ping)
        return registry

    @property
    def publisher(self) -> PublisherClient:
        """The process's Pub/Sub ``PublisherClient``."""
        return cast("PublisherClient", self.get("publisher"))

    @property
    def subscriber(self) -> SubscriberClient:
        """The process's Pub/Sub ``SubscriberClient``."""
        return cast("SubscriberClient", self.get("subscriber"))

    @property
    def storage(self) -> storage.Client:
        """The process's Cloud Storage ``Client``."""
        return cast("storage.Client", self.get("storage"))


def _unset_fix(settings: Settings) -> str:
    if settings.pubsub_emulator and settings.storage_emulator:
        return ("set CLOUDCLIENTS_PROJECT (any ID works against the emulators, e.g. 'test-project'), or use full "
                "names (projects/P/topics/T).")
    return ("set CLOUDCLIENTS_PROJECT, run where the metadata server answers (Cloud Run, GCE, GKE), use credentials "
            "that name a project, or use full names (projects/P/topics/T).")
