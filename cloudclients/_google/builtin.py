"""The built-in clients: how ``ClientRegistry.from_settings`` builds, closes, measures and pings
the publisher, the subscriber and the Storage client."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from google.api_core import exceptions as api_exceptions

from .._config import Settings
from .publisher import build_publisher, close_publisher, publisher_metrics
from .storage import build_storage, close_storage
from .subscriber import build_subscriber, close_subscriber

__all__ = ["ClientSpec", "builtin_clients"]


class ClientSpec(NamedTuple):
    """What :meth:`cloudclients.ClientRegistry.from_settings` registers for one kind."""

    factory: Callable[[], Any]
    close: Callable[[Any, float], None]
    metrics: Callable[[Any], Mapping[str, int]] | None
    ping: Callable[[Any, float], None]


def builtin_clients(settings: Settings, project: Callable[[], str]) -> dict[str, ClientSpec]:
    """Return ``{kind: ClientSpec}`` for the publisher, the subscriber and the Storage client.

    :param project: returns the project (discovering it on first call).
    """
    return {
        "publisher": ClientSpec(lambda: build_publisher(settings, project), close_publisher, publisher_metrics,
                                _ping_pubsub(project, "list_topics")),
        "subscriber": ClientSpec(lambda: build_subscriber(settings), close_subscriber, None,
                                 _ping_pubsub(project, "list_subscriptions")),
        "storage": ClientSpec(lambda: build_storage(settings, project), close_storage, None, _ping_storage),
    }


# -- health pings (ClientRegistry.ping) ----------------------------------------------
#
# One cheap, read-only request per client, without retries, bounded by the
# timeout. An answer that proves the service was reached and our credentials
# accepted counts as reachable even when IAM refuses the listing itself
# (a publisher-only service account may not list topics).

_REACHED = (api_exceptions.PermissionDenied, api_exceptions.NotFound)


def _ping_pubsub(project: Callable[[], str], list_method: str) -> Callable[[Any, float], None]:
    """A ping that lists one topic or subscription (*list_method*) of the project."""

    def ping(client: Any, timeout: float) -> None:
        request = {"project": f"projects/{project()}", "page_size": 1}
        with contextlib.suppress(*_REACHED):
            getattr(client, list_method)(request=request, retry=None, timeout=timeout)  # GAPIC: sent at once

    return ping


def _ping_storage(client: Any, timeout: float) -> None:
    with contextlib.suppress(*_REACHED):
        # The iterator is lazy: taking one page makes the request.
        next(iter(client.list_buckets(max_results=1, page_size=1, retry=None, timeout=timeout).pages), None)
