"""The process's Cloud Storage client: bounded waits, a pool sized for threaded workers."""

from __future__ import annotations

from collections.abc import Callable

import requests
from google.auth.credentials import Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage

from .._config import ConfigError, Settings, check_project_for
from .._storage_session import BoundedSessionMixin
from .channels import prepare
from .credentials import anonymous, credentials

__all__ = ["build_storage", "close_storage"]


class _BoundedSession(BoundedSessionMixin, requests.Session):  # type: ignore[misc]
    """A plain session (the emulator needs no credentials)."""


class _BoundedAuthorizedSession(BoundedSessionMixin, AuthorizedSession):  # type: ignore[misc]
    """google-auth's session (adds and refreshes the access token)."""


def _session(settings: Settings, creds: Credentials | None) -> requests.Session:
    session: BoundedSessionMixin = (
        _BoundedSession() if creds is None else _BoundedAuthorizedSession(creds)  # type: ignore[no-untyped-call]
    )
    session.cc_configure(settings.storage_timeout, settings.storage_emulator_host)
    assert isinstance(session, requests.Session)
    # requests' default pool keeps 10 connections per host: threaded workers
    # exhaust it and urllib3 logs "Connection pool is full, discarding connection".
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=settings.storage_pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _project_or_none(project: Callable[[], str]) -> str | None:
    # Object reads and writes need no project; listing and creating buckets do,
    # and fail with the library's "project not set" error when there is none.
    try:
        return project()
    except ConfigError:
        return None


def build_storage(settings: Settings, project: Callable[[], str]) -> storage.Client:
    """Build the process's Cloud Storage client from *settings*.

    :raises ConfigError: when Storage is not emulated and the project is an ID only
        the emulators accept.
    """
    check_project_for(settings, "Storage")
    prepare()  # before the first client of the process, whichever it is
    if settings.storage_emulator_host is not None:
        return storage.Client(
            project=_project_or_none(project),
            credentials=anonymous(),
            client_options={"api_endpoint": settings.storage_emulator_host},
            _http=_session(settings, None),
        )
    creds = credentials(settings, "the Storage client")
    return storage.Client(project=_project_or_none(project), credentials=creds, _http=_session(settings, creds))


def close_storage(client: storage.Client, timeout: float) -> None:
    """Close the Storage client's HTTP session."""
    client.close()
