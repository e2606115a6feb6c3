"""cloudclients-emulator: a pure-Python Pub/Sub emulator for tests and local runs.

Serves ``google.pubsub.v1`` over gRPC and the v1 REST API on one port, plus an
admin API (reset, fault injection, stream breaking). Start it with
``cloudclients-emulator --host-port 127.0.0.1:8085`` or ``python -m cloudclients_emulator``.
"""

__version__ = "0.1.0"
