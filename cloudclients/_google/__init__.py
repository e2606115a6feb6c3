"""Everything that touches the Google client libraries at run time lives in this package.

One module per job, each importing only the Google libraries it needs, so that a
caller pays for what it uses (the whole Pub/Sub and gRPC stack takes ~0.3 s to
import; google-auth's RSA keys a fraction of that). This file imports nothing:

* ``builtin`` — the built-in clients (:func:`~cloudclients._google.builtin.builtin_clients`):
  ``publisher`` (a tracking ``PublisherClient``), ``subscriber`` and ``storage``, each
  with its closer, metrics and health ping; built by ``publisher``, ``subscriber``,
  ``storage`` over ``channels`` and ``credentials`` (which also discovers the project).
* ``keys`` — google-auth's RSA keys: verifying push tokens, signing the testing kit's.
* ``admin`` — creating topics, subscriptions and buckets unless they exist, and
  publishing one message: for ``flask cloudclients …`` and the testing kit's topologies.

Emulator mode is applied *explicitly*: an insecure channel to the configured
host and ``AnonymousCredentials``, instead of relying on the client libraries'
own ``PUBSUB_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` handling (upstream
plans to remove it, and it reads the environment at construction time, so a
value set in ``app.config`` would otherwise be half-applied).

The rest of the package imports these modules inside the functions that need
them, never at the top: ``import cloudclients`` loads no Google library.
"""
