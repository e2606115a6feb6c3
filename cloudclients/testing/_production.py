"""Keep a test run away from production: what the plugin hides from the Google libraries, and gives back.

While a :class:`Shield` is up:

* ``GOOGLE_APPLICATION_CREDENTIALS`` is unset and ``CLOUDSDK_CONFIG`` points at an empty directory,
  so Application Default Credentials find neither a key file nor ``gcloud auth
  application-default login``'s credentials;
* ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP`` name a loopback port that is bound but never
  listens (every connection is refused at once), so nothing reaches a metadata server;
* ``NO_GCE_CHECK=true``: google-auth (2.48 and later) does not look for Compute Engine at all —
  neither by pinging the metadata server (three tries, ~3 s) nor by reading the machine's DMI
  product name, which on a CI runner hosted on GCE would report Compute Engine;
* cloudclients refuses to build a client that would use real credentials.

:meth:`Shield.lift` gives the real values back (for a test marked
``cloudclients_allow_production``), :meth:`Shield.cover` hides them again.

The real values are also written to the environment (``_CLOUDCLIENTS_TESTING_HIDDEN``) for the
processes the run starts: a pytest-xdist worker inherits the hidden environment and reads the
real one from there, as long as its environment is still exactly the hidden one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile

from .. import _guard

__all__ = ["HIDDEN_KEYS", "Shield"]

#: The variables a shield sets or unsets.
HIDDEN_KEYS = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "GCE_METADATA_HOST", "GCE_METADATA_IP",
               "NO_GCE_CHECK")
_RECORD = "_CLOUDCLIENTS_TESTING_HIDDEN"

GUARD_FIX = (
    "Point it at an emulator (cloudclients_emulators = pubsub storage in the pytest ini, or the "
    "cloudclients_env fixture), or allow production explicitly: cloudclients_allow_production = true, "
    "or @pytest.mark.cloudclients_allow_production on the test."
)
OPT_OUT = "opt out: cloudclients_allow_production = true (ini), or -p no:cloudclients"

Environ = dict[str, str | None]


def _apply(values: Environ) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _current(keys: tuple[str, ...]) -> Environ:
    return {key: os.environ.get(key) for key in keys}


class Shield:
    """Hide production from this process (see the module docstring); :meth:`close` undoes it all."""

    def __init__(self) -> None:
        self._before = _current((*HIDDEN_KEYS, _RECORD))
        #: The environment the tests would have seen without the plugin.
        self.real: Environ = _inherited_real() or _current(HIDDEN_KEYS)
        self._hole = socket.socket()
        self._hole.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused at once
        self._gcloud = tempfile.TemporaryDirectory(prefix="cloudclients-no-gcloud-")
        address = f"127.0.0.1:{self._hole.getsockname()[1]}"
        #: The environment the tests see.
        self.hidden: Environ = {
            "GOOGLE_APPLICATION_CREDENTIALS": None, "CLOUDSDK_CONFIG": self._gcloud.name,
            "GCE_METADATA_HOST": address, "GCE_METADATA_IP": address, "NO_GCE_CHECK": "true",
        }
        self._closed = False
        self.cover()
        os.environ[_RECORD] = json.dumps({"real": self.real, "hidden": self.hidden})

    def cover(self) -> None:
        """Hide production (again)."""
        _apply(self.hidden)
        _guard.refuse_production(GUARD_FIX)

    def lift(self) -> None:
        """Give the real environment back and let clients use real credentials, until :meth:`cover`."""
        _apply(self.real)
        _guard.refuse_production(None)

    def describe(self) -> str:
        """One line for the session header: what is hidden, and how to opt out."""
        credentials = self.real["GOOGLE_APPLICATION_CREDENTIALS"]
        return (
            "cloudclients: production out of reach: GOOGLE_APPLICATION_CREDENTIALS unset"
            f" ({'was ' + repr(credentials) if credentials else 'was unset'}),"
            " CLOUDSDK_CONFIG=<empty dir> (gcloud's credentials hidden),"
            f" GCE_METADATA_HOST/GCE_METADATA_IP={self.hidden['GCE_METADATA_HOST']} (refuses connections),"
            f" NO_GCE_CHECK=true; {OPT_OUT}"
        )

    def close(self) -> None:
        """Restore the environment as it was before the shield. Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        _guard.refuse_production(None)
        _apply(self._before)
        with contextlib.suppress(OSError):
            self._hole.close()
        with contextlib.suppress(OSError):
            self._gcloud.cleanup()


def _inherited_real() -> Environ | None:
    """The real environment a parent pytest process hid, if this environment is still its hidden one."""
    raw = os.environ.get(_RECORD)
    if not raw:
        return None
    try:
        record = json.loads(raw)
        real, hidden = record["real"], record["hidden"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(real, dict) or _current(HIDDEN_KEYS) != hidden:
        return None  # changed since (a test running pytest with an environment of its own)
    return {key: real.get(key) for key in HIDDEN_KEYS}
