"""Cloud Storage through get_storage() inside requests, against gcp-storage-emulator."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, request

from cloudclients import CloudClients, get_storage
from cloudclients.testing import EmulatorProcess
from tests.helpers import MakeApp


def storage_app(make_app: MakeApp, storage_emulator: EmulatorProcess) -> Flask:
    # Settings only in app.config, none in the environment: the endpoint must be applied explicitly.
    app = make_app(name="storage-app", STORAGE_EMULATOR_HOST=storage_emulator.host,
                   PUBSUB_EMULATOR_HOST="127.0.0.1:1", STORAGE_POOL_SIZE=48)

    @app.post("/buckets/<bucket>")
    def create_bucket(bucket: str) -> tuple[str, int]:
        get_storage().create_bucket(bucket)
        return "", 201

    @app.put("/blobs/<bucket>/<path:name>")
    def put(bucket: str, name: str) -> tuple[str, int]:
        get_storage().bucket(bucket).blob(name).upload_from_string(request.get_data(), content_type="text/plain")
        return "", 204

    @app.get("/blobs/<bucket>/<path:name>")
    def get(bucket: str, name: str) -> bytes:
        return get_storage().bucket(bucket).blob(name).download_as_bytes()

    @app.get("/blobs/<bucket>")
    def listing(bucket: str) -> list[str]:
        return [b.name for b in get_storage().list_blobs(bucket)]

    return app


def test_storage_round_trip_inside_requests(
    make_app: MakeApp, storage_emulator: EmulatorProcess, unique_name: Callable[[str], str]
) -> None:
    """A bucket is created, a blob written, read back and listed, all through get_storage() in views."""
    app = storage_app(make_app, storage_emulator)
    client = app.test_client()
    bucket = unique_name("bucket")
    assert client.post(f"/buckets/{bucket}").status_code == 201
    assert client.put(f"/blobs/{bucket}/receipts/o-1.txt", data=b"paid 12.50").status_code == 204
    assert client.get(f"/blobs/{bucket}/receipts/o-1.txt").data == b"paid 12.50"
    assert client.get(f"/blobs/{bucket}").json == ["receipts/o-1.txt"]
    registry = CloudClients.get_registry(app)
    assert registry.stats()["clients"]["storage"]["constructions"] == 1
    storage_client = registry.storage
    assert storage_client.api_endpoint == storage_emulator.host
    adapter = storage_client._http.get_adapter(storage_emulator.host)
    assert adapter._pool_maxsize == 48
