"""``ClientRegistry``: the registry with the built-in Google Cloud clients.

:class:`~cloudclients._registry.Registry` knows no client; this subclass adds
the three built-in kinds — ``publisher``, ``subscriber``, ``storage`` — as
:meth:`ClientRegistry.from_settings` and typed properties. The factories
themselves live in ``_factories``, the only module that imports the Google
libraries at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ._registry import Registry

if TYPE_CHECKING:  # typing only: the runtime Google imports live in _factories
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
    """

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "cloudclients") -> ClientRegistry:
        """Return a registry with the built-in ``publisher``, ``subscriber`` and
        ``storage`` factories configured from *settings* (nothing is built yet).

        Its :attr:`close_timeout` is the settings' ``shutdown_timeout``.
        """
        # Imported here, not at the top: the Google libraries take ~0.3 s to
        # import, and ``import cloudclients`` (CLI start-up, a preload master
        # that only reads its settings) should not pay for them.
        from ._factories import builtin_clients

        registry = cls(name, close_timeout=settings.shutdown_timeout)
        for kind, spec in builtin_clients(settings).items():
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
