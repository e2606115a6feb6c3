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

from ._emulators import (
    EmulatorError,
    EmulatorKind,
    EmulatorNotInstalledError,
    EmulatorProcess,
    Emulators,
    PubSubKind,
    free_port,
    official_pubsub_emulator,
    pubsub_emulator_kinds,
    start_emulators,
    start_pubsub_emulator,
    start_storage_emulator,
    stop_process_group,
)
from ._plugin import (
    TEST_PROJECT,
    TopicHandle,
    _cloudclients_production_mark,
    cloudclients_emulators,
    cloudclients_env,
    cloudclients_reset,
    emulator_registry,
    emulator_registry_for,
    emulator_settings,
    pubsub_emulator,
    pubsub_topic,
    pull_messages,
    push_token_issuer,
    pytest_addoption,
    pytest_configure,
    pytest_load_initial_conftests,
    pytest_report_header,
    pytest_unconfigure,
    storage_emulator,
    unique_name,
)
from ._push import PushTokenIssuer, SigningKey, default_push_token_issuer, push_envelope, sign_push_token
from ._topology import Topology, TopologyError, load_topology

# The plugin's hooks and fixtures are attributes of this module (the pytest11 entry point
# names it); they are not part of the importable API listed below.
_PLUGIN = (
    _cloudclients_production_mark, cloudclients_emulators, cloudclients_env, cloudclients_reset, emulator_registry,
    emulator_settings, pubsub_emulator, pubsub_topic, push_token_issuer, pytest_addoption, pytest_configure,
    pytest_load_initial_conftests, pytest_report_header, pytest_unconfigure, storage_emulator, unique_name,
)

__all__ = [
    "TEST_PROJECT",
    "EmulatorError",
    "EmulatorKind",
    "EmulatorNotInstalledError",
    "EmulatorProcess",
    "Emulators",
    "PubSubKind",
    "PushTokenIssuer",
    "SigningKey",
    "TopicHandle",
    "Topology",
    "TopologyError",
    "default_push_token_issuer",
    "emulator_registry_for",
    "free_port",
    "load_topology",
    "official_pubsub_emulator",
    "pubsub_emulator_kinds",
    "pull_messages",
    "push_envelope",
    "sign_push_token",
    "start_emulators",
    "start_pubsub_emulator",
    "start_storage_emulator",
    "stop_process_group",
]
