"""cloudclients: Google Cloud clients done right in Flask apps.

One Pub/Sub publisher, one subscriber and one Cloud Storage client per
process — built lazily, thread-safely, rebuilt after fork — for views to use
through ``get_publisher()``, ``get_subscriber()`` and ``get_storage()``.

.. code-block:: python

    from cloudclients import CloudClients, get_publisher

    app = Flask(__name__)
    app.config["CLOUDCLIENTS_PROJECT"] = "my-project"
    CloudClients(app)
"""

from typing import TYPE_CHECKING, Any

from ._background import BackgroundSubscription, SubscriptionState, SubscriptionStats
from ._clients import ClientRegistry
from ._config import ConfigError, Settings
from ._flask import CloudClients
from ._gevent import GeventStatus, gevent_status
from ._health import health_blueprint, health_report
from ._message import ReceivedMessage
from ._oidc import CertsUnavailableError, PushTokenVerifier, TokenRejectedError
from ._publish import PublishError, PublishFailure, confirm_publishes, publish
from ._push import push_endpoint
from ._registry import ClientStats, PingResult, RegistryState, RegistryStats
from ._shutdown import close_all, gunicorn_worker_exit, install_exit_handlers
from ._state import CloudClientsState, current_registry, get_client, get_publisher, get_storage, get_subscriber
from ._storage_session import StorageUnavailableError
from ._subscriber import gunicorn_post_worker_init, start_subscriptions, subscribe

if TYPE_CHECKING:
    from ._google.channels import EmulatorUnreachableError

__version__ = "0.1.0"

__all__ = [
    "BackgroundSubscription",
    "CertsUnavailableError",
    "ClientRegistry",
    "ClientStats",
    "CloudClients",
    "CloudClientsState",
    "ConfigError",
    "EmulatorUnreachableError",
    "GeventStatus",
    "PingResult",
    "PublishError",
    "PublishFailure",
    "PushTokenVerifier",
    "ReceivedMessage",
    "RegistryState",
    "RegistryStats",
    "Settings",
    "StorageUnavailableError",
    "SubscriptionState",
    "SubscriptionStats",
    "TokenRejectedError",
    "__version__",
    "close_all",
    "confirm_publishes",
    "current_registry",
    "get_client",
    "get_publisher",
    "get_storage",
    "get_subscriber",
    "gevent_status",
    "gunicorn_post_worker_init",
    "gunicorn_worker_exit",
    "health_blueprint",
    "health_report",
    "install_exit_handlers",
    "publish",
    "push_endpoint",
    "start_subscriptions",
    "subscribe",
]

# Public classes print as ``cloudclients.X`` (in tracebacks, reprs and docs), not as the
# private module that happens to define them.
for _name in __all__:
    _obj = globals().get(_name)  # EmulatorUnreachableError is loaded lazily (below)
    if isinstance(_obj, type) and _obj.__module__.startswith("cloudclients._"):
        _obj.__module__ = __name__
del _name, _obj


def __getattr__(name: str) -> Any:
    # Loaded on first use: it subclasses google-api-core's error class, and importing
    # google-api-core costs ~0.2 s that ``import cloudclients`` (a CLI, a preload
    # master reading its settings) should not pay.
    if name == "EmulatorUnreachableError":
        from ._google.channels import EmulatorUnreachableError

        return EmulatorUnreachableError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
