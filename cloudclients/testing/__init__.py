"""Testing kit: local emulators for any Flask app, and the pytest plugin that starts them.

The pytest plugin loads whenever cloudclients is installed next to pytest (a ``pytest11`` entry
point named ``cloudclients``; the ``testing`` extra only adds its dependencies). With no ini option
set it keeps every test run away from production: ``GOOGLE_APPLICATION_CREDENTIALS`` unset,
``CLOUDSDK_CONFIG`` an empty directory, ``GCE_METADATA_HOST``/``GCE_METADATA_IP`` a loopback port
that refuses connections, ``NO_GCE_CHECK=true``, and cloudclients clients that would use real
credentials raise; the session header says so. Opt out with ``cloudclients_allow_production = true``
in the ini, or ``-p no:cloudclients``.

Two ini lines test an app created at import time or by a factory against emulators::

    [pytest]
    cloudclients_emulators = pubsub storage
    cloudclients_topology = topology.json

Fixtures: ``pubsub_emulator``, ``storage_emulator``, ``cloudclients_emulators``,
``cloudclients_reset`` (empty emulators before a test), ``cloudclients_env``,
``emulator_settings``, ``emulator_registry``, ``pubsub_topic``, ``unique_name``,
``push_token_issuer``. See docs/testing.md.

The same parts work without pytest: :func:`start_emulators` (a context
manager), :func:`load_topology`, :func:`push_envelope`, :func:`sign_push_token`,
:class:`PushTokenIssuer`.
"""

from . import _emulators, _fixtures, _push, _session, _topology
from ._emulators import *  # noqa: F403 - each module's __all__ is its share of the public names
from ._fixtures import *  # noqa: F403
from ._fixtures import (
    cloudclients_emulators,
    cloudclients_env,
    cloudclients_reset,
    emulator_registry,
    emulator_settings,
    pubsub_emulator,
    pubsub_topic,
    push_token_issuer,
    storage_emulator,
    unique_name,
)
from ._plugin import (
    _cloudclients_production_mark,
    pytest_addoption,
    pytest_configure,
    pytest_load_initial_conftests,
    pytest_report_header,
    pytest_unconfigure,
)
from ._push import *  # noqa: F403
from ._session import *  # noqa: F403
from ._topology import *  # noqa: F403

# The plugin's hooks and fixtures are attributes of this module (the pytest11 entry point
# names it); they are not part of the importable API listed below.
_PLUGIN = (
    _cloudclients_production_mark, cloudclients_emulators, cloudclients_env, cloudclients_reset, emulator_registry,
    emulator_settings, pubsub_emulator, pubsub_topic, push_token_issuer, pytest_addoption, pytest_configure,
    pytest_load_initial_conftests, pytest_report_header, pytest_unconfigure, storage_emulator, unique_name,
)

__all__: list[str] = []
__all__ += _emulators.__all__
__all__ += _fixtures.__all__
__all__ += _push.__all__
__all__ += _session.__all__
__all__ += _topology.__all__
