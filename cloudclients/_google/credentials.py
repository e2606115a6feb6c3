"""Credentials and the project they name: explicit files, ADC, the metadata server."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any, cast

import google.auth
from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from .. import _guard
from .._config import Settings

__all__ = ["SCOPES", "anonymous", "credentials", "discover_project", "key_file_problem"]

log = logging.getLogger("cloudclients")

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def anonymous() -> Credentials:
    """Credentials for the emulators (no token is ever fetched)."""
    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def _file_info(path: str) -> dict[str, Any]:
    # Validated by Settings at init_app: UTF-8 JSON, a dict with a string "type".
    with open(path, encoding="utf-8-sig") as fh:
        return cast(dict[str, Any], json.load(fh))


def key_file_problem(path: str) -> str | None:
    """Why the service-account key file at *path* cannot sign anything, or ``None``.

    google-auth parses the ``private_key`` (no network); a key that does not
    parse would otherwise pass ``init_app`` and fail at the first call in a
    worker. The reason is fixed text: never the key, never google-auth's message.
    """
    info = _file_info(path)
    if info.get("type") != "service_account":
        return None
    try:
        service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    except Exception:  # whatever the parser raises, its message may quote the key: not passed on
        return "is a service-account key whose 'private_key' is not a valid PEM private key"
    return None


def credentials(settings: Settings, what: str = "a client") -> Credentials:
    """The credentials for the real services: ``CLOUDCLIENTS_CREDENTIALS_FILE``, else ADC.

    :raises RuntimeError: during a test run that refuses production (``cloudclients.testing``).
    """
    _guard.check(what)
    path = settings.credentials_file
    if not path:
        default, _ = google.auth.default(scopes=SCOPES)
        return default
    kind = _file_info(path)["type"]
    # Load the two common types explicitly (google-auth deprecates the generic
    # loader because it trusts whatever type the file claims).
    if kind == "service_account":
        return cast(Credentials, service_account.Credentials.from_service_account_file(path, scopes=SCOPES))  # type: ignore[no-untyped-call]
    if kind == "authorized_user":
        return cast(Credentials, user_credentials.Credentials.from_authorized_user_file(path, scopes=SCOPES))  # type: ignore[no-untyped-call]
    # Workload identity federation, impersonation, ...: the operator chose this
    # file in their own configuration, which is what the deprecation asks about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        creds, _ = google.auth.load_credentials_from_file(path, scopes=SCOPES)  # type: ignore[no-untyped-call]
    return cast(Credentials, creds)


def discover_project(settings: Settings) -> str | None:
    """The project when none is configured: from the credentials file, else from
    Application Default Credentials (the gcloud configuration, or the metadata
    server on Cloud Run, GCE and GKE). ``None`` when there is none.

    Never consulted when every client is emulated: a developer's ADC must not
    decide which project a local run names.
    """
    if settings.pubsub_emulator and settings.storage_emulator:
        return None
    _guard.check("project discovery")
    if settings.credentials_file:
        info = _file_info(settings.credentials_file)
        project = info.get("project_id") or info.get("quota_project_id")
        return str(project) if project else None
    try:
        _, project = google.auth.default(scopes=SCOPES)
    except Exception as exc:  # no ADC, a metadata server that answers oddly: asked again on next use
        log.warning("cloudclients: no project configured and none discoverable (%s: %s)",
                    type(exc).__name__, (str(exc).splitlines() or [""])[0][:200])
        return None
    return str(project) if project else None
