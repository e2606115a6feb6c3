"""What importing cloudclients costs: no Google library until a feature needs one, and then only
the one it needs (the Pub/Sub and gRPC stack takes ~0.3 s to import)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

_REPORT = """
import json, sys
print(json.dumps(sorted({".".join(m.split(".")[:2]) for m in sys.modules if m.split(".")[0] in ("google", "grpc")})))
"""


@functools.cache
def _loaded_after(code: str) -> tuple[str, ...]:
    done = subprocess.run([sys.executable, "-c", code + _REPORT], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return tuple(json.loads(done.stdout.splitlines()[-1]))


def google_modules_after(code: str) -> list[str]:
    """The Google and gRPC packages (two dotted levels) loaded by running *code* in a fresh interpreter,
    beyond those the interpreter loads before any code runs (old releases of google-cloud-core and
    googleapis-common-protos install ``*-nspkg.pth`` files that import ``google``, ``google.cloud`` and
    ``google.logging`` at start-up)."""
    at_start = set(_loaded_after(""))
    return [name for name in _loaded_after(code) if name not in at_start]


def test_importing_cloudclients_loads_no_google_library() -> None:
    """`import cloudclients` (a CLI starting, a preload master reading its settings) and the testing
    kit load neither google-auth, google-api-core, the client libraries nor grpc."""
    assert google_modules_after("import cloudclients, cloudclients.testing") == []


def test_verifying_a_push_token_loads_google_auth_only() -> None:
    """A push-only app verifying tokens loads google-auth's RSA keys, not Pub/Sub, Storage or gRPC."""
    code = """
from cloudclients import PushTokenVerifier
from cloudclients.testing import PushTokenIssuer
with PushTokenIssuer() as issuer:
    token = issuer.sign_push_token(audience="https://app.example.com/push")
    PushTokenVerifier(issuer.certs_url).verify(token, audience="https://app.example.com/push")
"""
    assert [name for name in google_modules_after(code) if name != "google"] == ["google.auth"]  # the namespace
