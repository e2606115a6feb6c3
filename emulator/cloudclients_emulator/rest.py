"""The HTTP/1.1 side of the port: readiness, the Pub/Sub v1 REST API, the admin API, push certificates.

The REST routes follow the ``google.api.http`` rules of google.pubsub.v1, so
google-cloud-pubsub's REST transport (which cloudclients uses in fork children
that cannot use gRPC) and plain ``curl`` work against the emulator. Path
segments are percent-decoded before use (a REST client sends ``my%2Btopic``
for ``my+topic``). JSON is converted with ``google.protobuf.json_format``;
errors use Google's JSON error shape, with their details (exactly-once
delivery's ``google.rpc.ErrorInfo``) as ``details``.

``GET /oauth2/v1/certs`` and ``/oauth2/v3/certs`` serve the certificates of
the key that signs push tokens, in the formats of Google's URLs of the same
paths (see :mod:`.oidc`).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from google.protobuf import any_pb2, json_format

from .admin import Admin
from .errors import ApiError, Code, http_status
from .http11 import Request, Response
from .oidc import CERTS_MAX_AGE, TokenSigner
from .service import UNARY, Service

__all__ = ["HttpApp"]

# (HTTP method, collection, verb) -> (RPC, the request field the resource name fills)
_RESOURCE_ROUTES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("PUT", "topics", ""): ("CreateTopic", "name"),
    ("GET", "topics", ""): ("GetTopic", "topic"),
    ("PATCH", "topics", ""): ("UpdateTopic", "topic.name"),
    ("DELETE", "topics", ""): ("DeleteTopic", "topic"),
    ("POST", "topics", "publish"): ("Publish", "topic"),
    ("PUT", "subscriptions", ""): ("CreateSubscription", "name"),
    ("GET", "subscriptions", ""): ("GetSubscription", "subscription"),
    ("PATCH", "subscriptions", ""): ("UpdateSubscription", "subscription.name"),
    ("DELETE", "subscriptions", ""): ("DeleteSubscription", "subscription"),
    ("POST", "subscriptions", "detach"): ("DetachSubscription", "subscription"),
    ("POST", "subscriptions", "modifyAckDeadline"): ("ModifyAckDeadline", "subscription"),
    ("POST", "subscriptions", "acknowledge"): ("Acknowledge", "subscription"),
    ("POST", "subscriptions", "pull"): ("Pull", "subscription"),
    ("POST", "subscriptions", "modifyPushConfig"): ("ModifyPushConfig", "subscription"),
    ("POST", "subscriptions", "seek"): ("Seek", "subscription"),
    ("PUT", "snapshots", ""): ("CreateSnapshot", "name"),
    ("GET", "snapshots", ""): ("GetSnapshot", "snapshot"),
    ("PATCH", "snapshots", ""): ("UpdateSnapshot", "snapshot.name"),
    ("DELETE", "snapshots", ""): ("DeleteSnapshot", "snapshot"),
}
# google.iam.v1.IAMPolicy, bound by Pub/Sub for each of its collections (as its REST clients call it).
for _collection in ("topics", "subscriptions", "snapshots", "schemas"):
    _RESOURCE_ROUTES[("GET", _collection, "getIamPolicy")] = ("GetIamPolicy", "resource")
    _RESOURCE_ROUTES[("POST", _collection, "setIamPolicy")] = ("SetIamPolicy", "resource")
    _RESOURCE_ROUTES[("POST", _collection, "testIamPermissions")] = ("TestIamPermissions", "resource")
# GET projects/{p}/{collection}
_PROJECT_LISTS = {"topics": "ListTopics", "subscriptions": "ListSubscriptions", "snapshots": "ListSnapshots"}
# GET projects/{p}/topics/{t}/{collection}
_TOPIC_LISTS = {"subscriptions": "ListTopicSubscriptions", "snapshots": "ListTopicSnapshots"}
_QUERY_FIELDS = {"pageSize": "page_size", "page_size": "page_size", "pageToken": "page_token",
                 "page_token": "page_token", "maxMessages": "max_messages", "max_messages": "max_messages",
                 "options.requestedPolicyVersion": "options.requested_policy_version",
                 "options.requested_policy_version": "options.requested_policy_version"}
# json_format's wording for an unknown field, turned into the service's ("Unknown name ...: Cannot find field.").
_NO_FIELD = re.compile(r'has no field named "([^"]*)" at "[^".\[]*\.?([^"]*)"')


def _payload_error(exc: Exception) -> str:
    """The service's message for a JSON body it cannot take."""
    found = _NO_FIELD.search(str(exc))
    if found is None:
        return f"Invalid JSON payload received. {exc}"
    name, where = found.groups()
    at = f" at '{where}'" if where else ""
    return f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'


def route(method: str, path: str) -> tuple[str, str, str] | None:
    """``(rpc, field, resource name)`` for a REST request, or None."""
    if not path.startswith("/v1/"):
        return None
    segments = [unquote(s) for s in path[4:].split("/")]
    if len(segments) < 3 or segments[0] != "projects":
        return None
    verb = ""
    if ":" in segments[-1]:
        segments[-1], verb = segments[-1].rsplit(":", 1)
    project = f"projects/{segments[1]}"
    if len(segments) == 3 and not verb and method == "GET" and segments[2] in _PROJECT_LISTS:
        return _PROJECT_LISTS[segments[2]], "project", project
    if len(segments) == 4:
        found = _RESOURCE_ROUTES.get((method, segments[2], verb))
        if found is not None:
            return found[0], found[1], "/".join(segments)
    if len(segments) == 5 and segments[2] == "topics" and not verb and method == "GET" and segments[4] in _TOPIC_LISTS:
        return _TOPIC_LISTS[segments[4]], "topic", "/".join(segments[:4])
    return None


def _set(message: Any, dotted: str, value: str | int) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        message = getattr(message, part)
    setattr(message, last, value)


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


def _error(code: Code, message: str, details: tuple[Any, ...] = ()) -> Response:
    """Google's JSON error: ``{"error": {"code", "message", "status", "details"}}``, each detail a
    message in its JSON form with its type URL as ``@type`` (as ``google.protobuf.Any`` is written)."""
    status = http_status(code)
    error: dict[str, Any] = {"code": status, "message": message, "status": code.name}
    if details:
        error["details"] = [_detail_json(detail) for detail in details]
    return _json(status, {"error": error})


def _detail_json(detail: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return json_format.MessageToDict(packed)


class HttpApp:
    """Answers every HTTP/1.1 request of the port."""

    def __init__(self, service: Service, signer: TokenSigner) -> None:
        self.service = service
        self.admin = Admin(service)
        self.certs = {"/oauth2/v1/certs": signer.certs_v1, "/oauth2/v3/certs": signer.certs_v3}

    async def __call__(self, request: Request) -> Response:
        url = urlsplit(request.target)
        path = url.path
        if path == "/":
            if request.method in ("GET", "HEAD"):
                return Response(200, b"Ok", "text/plain")
            return Response(405, b"GET / answers Ok once the emulator serves\n", "text/plain", [("allow", "GET, HEAD")])
        if path.startswith("/admin/"):
            return self.admin.handle(request.method, path, request.body)
        certs = self.certs.get(path)
        if certs is not None:
            if request.method not in ("GET", "HEAD"):
                return Response(405, b"the certificates answer GET\n", "text/plain", [("allow", "GET, HEAD")])
            # Google sends public, max-age and must-revalidate; verifiers cache for max-age.
            return Response(200, certs(), headers=[
                ("cache-control", f"public, max-age={CERTS_MAX_AGE}, must-revalidate")])
        found = route(request.method, path)
        if found is None:
            return _error(Code.NOT_FOUND, f"No route for {request.method} {path}")
        rpc, field, name = found
        return await self._rest(rpc, field, name, request.body, url.query)

    async def _rest(self, rpc: str, field: str, name: str, raw: bytes, query: str) -> Response:
        _, request_class, response_class = UNARY[rpc]
        request = request_class()
        try:
            if raw.strip():
                # Unknown fields are refused, as by the service: a misspelt field is a mistake, not a no-op.
                json_format.Parse(raw, request)
            for key, values in parse_qs(query).items():
                target = _QUERY_FIELDS.get(key)
                if target == "page_token":
                    request.page_token = values[0]
                elif target is not None:
                    _set(request, target, int(values[0]))
            _set(request, field, name)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            return _error(Code.INVALID_ARGUMENT, _payload_error(exc))
        try:
            response = self.service.call(rpc, request)
            if isinstance(response, asyncio.Future):
                response = await response
        except ApiError as exc:
            return _error(exc.code, exc.message, exc.details)
        if isinstance(response, bytes):
            response = response_class.FromString(response)
        return Response(200, json_format.MessageToJson(response, indent=None).encode())

