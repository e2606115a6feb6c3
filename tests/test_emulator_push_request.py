"""The emulator's unwrapped push request: attributes HTTP cannot carry as headers are left out
instead of breaking the request (or, worse, changing how it is framed)."""

from __future__ import annotations

from cloudclients_emulator.oidc import TokenSigner
from cloudclients_emulator.push import request_for
from cloudclients_emulator.state import pb


def test_attributes_that_cannot_be_headers_are_left_out() -> None:
    message = pb.PubsubMessage(data=b"raw", message_id="7", attributes={
        "color": "red", "content-length": "0", "Transfer-Encoding": "chunked", "x-goog-pubsub-message-id": "8",
        "has space": "x", "accent": "caf\u00e9", "newline": "a\r\nb: c", "padded": " x ",
    })
    message.publish_time.FromSeconds(1_700_000_000)
    config = pb.Subscription(push_config={"push_endpoint": "http://127.0.0.1:1/push",
                                          "no_wrapper": {"write_metadata": True}}).push_config
    body, headers = request_for("projects/p/subscriptions/s", message, None, config, TokenSigner())
    assert body == b"raw"
    names = [name.lower() for name, _ in headers]
    assert dict(headers)["color"] == "red"
    assert dict(headers)["x-goog-pubsub-message-id"] == "7"
    assert dict(headers)["x-goog-pubsub-publish-time"] == "2023-11-14T22:13:20Z"
    assert "x-goog-pubsub-ordering-key" not in names  # no ordering key
    assert len(names) == len(set(names))  # nothing duplicated or overridden
    assert not {"transfer-encoding", "has space", "accent", "newline", "padded"} & set(names)
    assert names.count("content-length") == 0  # the client adds the real one
