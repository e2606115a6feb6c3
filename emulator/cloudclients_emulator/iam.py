"""The ``google.iam.v1.IAMPolicy`` service for topics, subscriptions and snapshots.

Pub/Sub serves IAMPolicy on its own endpoint, so the client libraries call
``publisher.get_iam_policy(...)`` on the Pub/Sub channel: here, on the same
port, over gRPC and REST. Policies are stored, versioned by etag and checked
the way ``google/iam/v1/iam_policy.proto`` and ``policy.proto`` describe, but
nothing is enforced: there is no authentication, every caller may do
everything, and TestIamPermissions grants every Pub/Sub permission that
applies to the resource.

A policy lives on its resource object (``Topic.iam_policy`` …), so deleting
the resource drops it, and a resource re-created under the same name starts
with the empty policy, as in the service.
"""

from __future__ import annotations

import re
import struct
import time
from typing import Any

from google.iam.v1 import iam_policy_pb2, policy_pb2

from .errors import ApiError, Code
from .names import check_name
from .state import State

__all__ = ["EMPTY_ETAG", "IAM_METHODS", "IAM_SERVICE", "PERMISSIONS", "IamPolicies"]

IAM_SERVICE = "google.iam.v1.IAMPolicy"

#: Unary methods: name -> (service, request class, response class), raw protobuf classes.
IAM_METHODS: dict[str, tuple[str, Any, Any]] = {
    "GetIamPolicy": (IAM_SERVICE, iam_policy_pb2.GetIamPolicyRequest, policy_pb2.Policy),
    "SetIamPolicy": (IAM_SERVICE, iam_policy_pb2.SetIamPolicyRequest, policy_pb2.Policy),
    "TestIamPermissions": (IAM_SERVICE, iam_policy_pb2.TestIamPermissionsRequest,
                           iam_policy_pb2.TestIamPermissionsResponse),
}

#: The etag of a resource whose policy was never set (what the service answers: base64 "ACAB").
EMPTY_ETAG = b"\x00\x20\x01"

#: Pub/Sub's permissions, by the collection they apply to
#: (https://cloud.google.com/pubsub/docs/access-control#permissions).
PERMISSIONS: dict[str, frozenset[str]] = {
    "topics": frozenset(f"pubsub.topics.{p}" for p in (
        "attachSubscription", "create", "delete", "detachSubscription", "get", "getIamPolicy", "list", "publish",
        "setIamPolicy", "update", "updateTag")),
    "subscriptions": frozenset(f"pubsub.subscriptions.{p}" for p in (
        "consume", "create", "delete", "get", "getIamPolicy", "list", "setIamPolicy", "update")),
    "snapshots": frozenset(f"pubsub.snapshots.{p}" for p in (
        "create", "delete", "get", "getIamPolicy", "list", "seek", "setIamPolicy", "update")),
    "schemas": frozenset(f"pubsub.schemas.{p}" for p in (
        "attach", "commit", "create", "delete", "get", "getIamPolicy", "list", "listRevisions", "rollback",
        "setIamPolicy", "validate")),
}

_VERSIONS = (0, 1, 3)
_POLICY_FIELDS = frozenset(policy_pb2.Policy.DESCRIPTOR.fields_by_name)
_DEFAULT_MASK = ("bindings", "etag")
#: "The bindings in a Policy can refer to up to 1,500 principals" (policy.proto).
MAX_PRINCIPALS = 1500
#: service.resource.verb, no wildcards ("Permissions with wildcards (such as '*' or 'storage.*') are not allowed").
_PERMISSION = re.compile(r"[a-z][a-zA-Z0-9]*\.[a-zA-Z][a-zA-Z0-9]*\.[a-zA-Z][a-zA-Z0-9]*")
_ROLE = re.compile(r"roles/[A-Za-z0-9_.]+|(projects|organizations)/[^/]+/roles/[A-Za-z0-9_.]+")
#: Basic roles, which apply to every resource, next to the roles/pubsub.* ones.
_BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
_MEMBER_KINDS = ("user:", "serviceAccount:", "group:", "domain:", "deleted:", "principal:", "principalSet:",
                 "projectOwner:", "projectEditor:", "projectViewer:")
_ABORTED = "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."


class IamPolicies:
    """GetIamPolicy, SetIamPolicy and TestIamPermissions over the resources of one :class:`State`."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._last_etag = 0

    # -- the RPCs ------------------------------------------------------------------------------

    def get(self, request: Any) -> Any:
        """The resource's policy, or an empty one with :data:`EMPTY_ETAG` if none was set."""
        holder = self._holder(request.resource)
        requested = request.options.requested_policy_version
        if requested not in _VERSIONS:
            raise ApiError(Code.INVALID_ARGUMENT,
                           f"Invalid requested_policy_version: {requested}; valid values are 0, 1 and 3.")
        stored = holder.iam_policy
        if stored is None:
            return policy_pb2.Policy(etag=EMPTY_ETAG)
        if stored.version == 3 and requested < 3:
            raise ApiError(Code.INVALID_ARGUMENT,
                           "The policy has conditional role bindings: request it with requested_policy_version 3.")
        return stored

    def set(self, request: Any) -> Any:
        """Replace the fields of ``update_mask`` (default ``bindings, etag``); ABORTED on a stale etag."""
        holder = self._holder(request.resource)
        if not request.HasField("policy"):
            raise ApiError(Code.INVALID_ARGUMENT, "The request has no policy.")
        given = request.policy
        paths = list(request.update_mask.paths) or list(_DEFAULT_MASK)
        for path in paths:
            if path not in _POLICY_FIELDS:
                raise ApiError(Code.INVALID_ARGUMENT, f"Invalid update_mask path: {path}")
        if given.version not in _VERSIONS:
            raise ApiError(Code.INVALID_ARGUMENT, f"Invalid policy version: {given.version}; valid values are 0, 1 "
                                                  "and 3.")
        current = holder.iam_policy
        current_etag = EMPTY_ETAG if current is None else current.etag
        # The etag makes the read-modify-write safe; without one the policy is overwritten unconditionally.
        if "etag" in paths and given.etag and given.etag != current_etag:
            raise ApiError(Code.ABORTED, _ABORTED)
        new = policy_pb2.Policy()
        if current is not None:
            new.CopyFrom(current)
        for path in paths:
            if path in ("etag", "version"):
                continue
            new.ClearField(path)
            getattr(new, path).extend(getattr(given, path))
        _normalise(new, given.version)
        new.etag = self._next_etag()
        holder.iam_policy = new
        return new

    def test(self, request: Any) -> Any:
        """The asked permissions that are Pub/Sub's for this kind of resource: all granted (no auth here)."""
        collection = _collection(request.resource)
        for permission in request.permissions:
            if not _PERMISSION.fullmatch(permission):
                raise ApiError(Code.INVALID_ARGUMENT, f"Invalid permission: {permission!r} (permissions are "
                                                      "service.resource.verb, without wildcards).")
        response = iam_policy_pb2.TestIamPermissionsResponse()
        # "If the resource does not exist, this will return an empty set of permissions, not a NOT_FOUND error."
        if not self._exists(request.resource, collection):
            return response
        valid = PERMISSIONS[collection]
        response.permissions.extend(p for p in dict.fromkeys(request.permissions) if p in valid)
        return response

    # -- helpers ---------------------------------------------------------------------------------

    def _holder(self, name: str) -> Any:
        """The topic, subscription or snapshot object *name* refers to (NOT_FOUND if there is none)."""
        collection = _collection(name)
        state = self.state
        if collection == "topics":
            return state.topic(name)
        if collection == "subscriptions":
            return state.sub(name)
        if collection == "snapshots":
            snap = state.snaps.get(name)
            if snap is None:
                raise ApiError(Code.NOT_FOUND, f"Snapshot does not exist: {name}")
            return snap
        # The emulator has no Schema service: no schema ever exists.
        raise ApiError(Code.NOT_FOUND, f"Schema does not exist: {name}")

    def _exists(self, name: str, collection: str) -> bool:
        tables: dict[str, Any] = {"topics": self.state.topics, "subscriptions": self.state.subs,
                                  "snapshots": self.state.snaps}
        return name in tables.get(collection, ())

    def _next_etag(self) -> bytes:
        """A new etag, unique for the emulator's life (8 bytes, like the service's)."""
        self._last_etag = max(time.time_ns(), self._last_etag + 1)
        return struct.pack(">Q", self._last_etag)


def _collection(name: str) -> str:
    """``topics``, ``subscriptions``, ``snapshots`` or ``schemas``, for a valid resource name."""
    parts = name.split("/")
    if len(parts) == 4 and parts[2] in PERMISSIONS:
        check_name(name, parts[2])
        return parts[2]
    if not name:
        raise ApiError(Code.INVALID_ARGUMENT, "The request has no resource.")
    raise ApiError(Code.INVALID_ARGUMENT, f"Invalid resource name: {name!r} (expected projects/P/topics/T, "
                                          "projects/P/subscriptions/S, projects/P/snapshots/S or projects/P/schemas/S)")


def _normalise(policy: Any, version: int) -> None:
    """Check the bindings and store them as IAM does: one binding per role and condition, each member once.

    :raises ApiError: INVALID_ARGUMENT for a role or member the service refuses, or conditions below version 3.
    """
    merged: dict[tuple[str, bytes], Any] = {}
    principals = 0
    for binding in policy.bindings:
        role = binding.role
        if not _ROLE.fullmatch(role):
            raise ApiError(Code.INVALID_ARGUMENT, f"Invalid role: {role!r}")
        if role.startswith("roles/") and role not in _BASIC_ROLES and not role.startswith("roles/pubsub."):
            raise ApiError(Code.INVALID_ARGUMENT, f"Role {role} is not supported for this resource.")
        for member in binding.members:
            if member not in ("allUsers", "allAuthenticatedUsers") and not (
                    member.startswith(_MEMBER_KINDS) and member.partition(":")[2]):
                raise ApiError(Code.INVALID_ARGUMENT, f"Invalid member: {member!r} (expected user:, "
                                                      "serviceAccount:, group:, domain:, allUsers, …)")
        principals += len(binding.members)
        if binding.HasField("condition") and version != 3:
            raise ApiError(Code.INVALID_ARGUMENT, "A policy with conditional role bindings must have version 3.")
        key = (role, binding.condition.SerializeToString() if binding.HasField("condition") else b"")
        target = merged.get(key)
        if target is None:
            target = merged[key] = policy_pb2.Binding(role=role)
            if binding.HasField("condition"):
                target.condition.CopyFrom(binding.condition)
        for member in binding.members:
            if member not in target.members:
                target.members.append(member)
    if principals > MAX_PRINCIPALS:
        raise ApiError(Code.INVALID_ARGUMENT, f"The policy names {principals} principals; at most {MAX_PRINCIPALS} "
                                              "are allowed.")
    policy.ClearField("bindings")
    # A binding left without members is dropped, as IAM does when the last member is removed.
    policy.bindings.extend(b for b in merged.values() if b.members)
    policy.version = 3 if any(b.HasField("condition") for b in policy.bindings) else 1
