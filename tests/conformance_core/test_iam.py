"""google.iam.v1.IAMPolicy on topics, subscriptions and snapshots, as the service answers it.

The semantics are those of google/iam/v1/iam_policy.proto and policy.proto:
an empty policy with an etag for a resource whose policy was never set, a new
etag on every SetIamPolicy, ABORTED for a stale one, ``update_mask`` on Set,
TestIamPermissions answering the permissions that apply. The first two cases
are the IAM tests of googleapis/python-pubsub's tests/system.py, as a real
client sends them. Google's emulator has no IAMPolicy service (UNIMPLEMENTED).
"""

from __future__ import annotations

import base64
import operator
from typing import Any

import pytest
from google.api_core import exceptions

from tests.conformance_core.conftest import Target, xfail_official

NO_IAM = "the official emulator does not implement google.iam.v1.IAMPolicy (UNIMPLEMENTED)"


@pytest.fixture
def iam_target(request: pytest.FixtureRequest, target: Target) -> Target:
    """The target, with the official emulator's missing IAM service expected to fail."""
    xfail_official(request, target, NO_IAM)
    return target


def _system_test_bindings(client: Any, resource: str) -> None:
    """python-pubsub's test_managing_{topic,subscription}_iam_policy, on *client* and *resource*."""
    policy = client.get_iam_policy(request={"resource": resource})
    policy.bindings.add(role="roles/pubsub.editor", members=["domain:google.com"])
    policy.bindings.add(role="roles/pubsub.viewer", members=["group:cloud-logs@google.com"])
    new_policy = client.set_iam_policy(request={"resource": resource, "policy": policy})

    policy = client.get_iam_policy(request={"resource": resource})
    assert policy.bindings == new_policy.bindings
    assert len(policy.bindings) == 2
    bindings = sorted(policy.bindings, key=operator.attrgetter("role"))
    assert (bindings[0].role, list(bindings[0].members)) == ("roles/pubsub.editor", ["domain:google.com"])
    assert (bindings[1].role, list(bindings[1].members)) == ("roles/pubsub.viewer", ["group:cloud-logs@google.com"])


def test_topic_iam_policy(iam_target: Target) -> None:
    _system_test_bindings(iam_target.publisher, iam_target.topic())


def test_subscription_iam_policy(iam_target: Target) -> None:
    topic = iam_target.topic()
    _system_test_bindings(iam_target.subscriber, iam_target.subscription(topic))


def test_snapshot_iam_policy(iam_target: Target) -> None:
    topic = iam_target.topic()
    snapshot = iam_target.name("snapshots")
    iam_target.subscriber.create_snapshot(name=snapshot, subscription=iam_target.subscription(topic))
    _system_test_bindings(iam_target.subscriber, snapshot)


def test_a_policy_never_set_is_empty_with_an_etag(iam_target: Target) -> None:
    """"Returns an empty policy if the resource exists and does not have a policy set" — with an etag
    to set it with."""
    policy = iam_target.publisher.get_iam_policy(request={"resource": iam_target.topic()})
    assert list(policy.bindings) == []
    assert policy.etag


def test_set_returns_a_new_etag_and_a_stale_one_is_aborted(iam_target: Target) -> None:
    """The read-modify-write cycle: Set with Get's etag succeeds and returns a new etag; Set again with
    the old one is ABORTED and changes nothing."""
    publisher, topic = iam_target.publisher, iam_target.topic()
    read = publisher.get_iam_policy(request={"resource": topic})
    read.bindings.add(role="roles/pubsub.publisher", members=["user:alice@example.com"])
    written = publisher.set_iam_policy(request={"resource": topic, "policy": read})
    assert written.etag and written.etag != read.etag
    assert written.version == 1

    read.bindings.add(role="roles/pubsub.viewer", members=["user:bob@example.com"])
    with pytest.raises(exceptions.Aborted):
        publisher.set_iam_policy(request={"resource": topic, "policy": read})
    now = publisher.get_iam_policy(request={"resource": topic})
    assert now.etag == written.etag
    assert [b.role for b in now.bindings] == ["roles/pubsub.publisher"]


def test_set_without_an_etag_overwrites(iam_target: Target) -> None:
    publisher, topic = iam_target.publisher, iam_target.topic()
    publisher.set_iam_policy(request={"resource": topic, "policy": {
        "bindings": [{"role": "roles/pubsub.viewer", "members": ["user:a@example.com"]}]}})
    second = publisher.set_iam_policy(request={"resource": topic, "policy": {
        "bindings": [{"role": "roles/pubsub.publisher", "members": ["user:b@example.com"]}]}})
    assert [b.role for b in second.bindings] == ["roles/pubsub.publisher"]


def test_update_mask_limits_what_set_changes(iam_target: Target) -> None:
    """Only the fields in ``update_mask`` are modified (default ``bindings, etag``); an unknown path is refused."""
    publisher, topic = iam_target.publisher, iam_target.topic()
    publisher.set_iam_policy(request={"resource": topic, "policy": {
        "bindings": [{"role": "roles/pubsub.viewer", "members": ["user:a@example.com"]}]}})
    kept = publisher.set_iam_policy(request={
        "resource": topic, "update_mask": {"paths": ["audit_configs"]},
        "policy": {"bindings": [{"role": "roles/pubsub.publisher", "members": ["user:b@example.com"]}]}})
    assert [b.role for b in kept.bindings] == ["roles/pubsub.viewer"]
    with pytest.raises(exceptions.InvalidArgument):
        publisher.set_iam_policy(request={"resource": topic, "update_mask": {"paths": ["members"]},
                                          "policy": {"bindings": []}})


@pytest.mark.parametrize("collection", ["topics", "subscriptions", "snapshots"])
def test_a_missing_resource_is_not_found(iam_target: Target, collection: str) -> None:
    """Get and Set on a resource that does not exist: NOT_FOUND; TestIamPermissions: no permissions
    ("this will return an empty set of permissions, not a NOT_FOUND error")."""
    client, name = iam_target.subscriber, iam_target.name(collection)
    with pytest.raises(exceptions.NotFound):
        client.get_iam_policy(request={"resource": name})
    with pytest.raises(exceptions.NotFound):
        client.set_iam_policy(request={"resource": name, "policy": {}})
    asked = [f"pubsub.{collection}.get"]
    assert list(client.test_iam_permissions(request={"resource": name, "permissions": asked}).permissions) == []


def test_deleting_the_resource_drops_its_policy(iam_target: Target) -> None:
    """Policies "are created and deleted implicitly with the resources to which they are attached":
    a topic re-created under the same name starts with an empty policy."""
    publisher, topic = iam_target.publisher, iam_target.topic()
    publisher.set_iam_policy(request={"resource": topic, "policy": {
        "bindings": [{"role": "roles/pubsub.viewer", "members": ["user:a@example.com"]}]}})
    publisher.delete_topic(topic=topic)
    publisher.create_topic(name=topic)
    assert list(publisher.get_iam_policy(request={"resource": topic}).bindings) == []


def test_test_iam_permissions_answers_the_pubsub_permissions_asked(iam_target: Target) -> None:
    """Every Pub/Sub permission of the resource is granted (no authentication); others are not answered."""
    publisher, topic = iam_target.publisher, iam_target.topic()
    asked = ["pubsub.topics.publish", "pubsub.topics.update", "storage.buckets.get", "pubsub.topics.nothing"]
    answer = publisher.test_iam_permissions(request={"resource": topic, "permissions": asked})
    assert list(answer.permissions) == ["pubsub.topics.publish", "pubsub.topics.update"]


@pytest.mark.parametrize("permission", ["pubsub.*", "*", "pubsub.topics", "not a permission"])
def test_a_malformed_permission_is_refused(iam_target: Target, permission: str) -> None:
    """"Permissions with wildcards (such as '*' or 'storage.*') are not allowed"."""
    with pytest.raises(exceptions.InvalidArgument):
        iam_target.publisher.test_iam_permissions(request={"resource": iam_target.topic(),
                                                           "permissions": [permission]})


@pytest.mark.parametrize(
    "policy",
    [
        {"version": 2},
        {"bindings": [{"role": "viewer", "members": ["user:a@example.com"]}]},
        {"bindings": [{"role": "roles/pubsub.viewer", "members": ["alice@example.com"]}]},
        {"bindings": [{"role": "roles/pubsub.viewer", "members": ["user:a@example.com"],
                       "condition": {"expression": "true"}}]},
    ],
    ids=["version 2", "a role without roles/", "a member without a type", "a condition below version 3"],
)
def test_an_invalid_policy_is_refused(iam_target: Target, policy: dict[str, Any]) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        iam_target.publisher.set_iam_policy(request={"resource": iam_target.topic(), "policy": policy})



def test_iam_over_rest(iam_target: Target) -> None:
    """The REST bindings Pub/Sub's REST clients use: GET :getIamPolicy, POST :setIamPolicy and :testIamPermissions."""
    topic = iam_target.topic()
    status, empty = iam_target.rest("GET", f"{topic}:getIamPolicy")
    assert status == 200 and base64.b64decode(empty["etag"])
    status, written = iam_target.rest("POST", f"{topic}:setIamPolicy", {"policy": {
        "etag": empty["etag"], "bindings": [{"role": "roles/pubsub.viewer", "members": ["user:a@example.com"]}]}})
    assert status == 200 and written["bindings"][0]["role"] == "roles/pubsub.viewer"
    status, stale = iam_target.rest("POST", f"{topic}:setIamPolicy", {"policy": {"etag": empty["etag"]}})
    assert status == 409 and stale["error"]["status"] == "ABORTED"
    status, tested = iam_target.rest("POST", f"{topic}:testIamPermissions",
                           {"permissions": ["pubsub.topics.publish"]})
    assert (status, tested) == (200, {"permissions": ["pubsub.topics.publish"]})
