"""The port of Google's App Engine Storage sample (examples/samples/storage_upload): an upload is
really in the bucket — same bytes, same content type, publicly readable at the URL it answers —
and every upload it cannot store is refused with a status, never answered 200."""

from __future__ import annotations

import contextlib
import io
import urllib.parse
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import requests

from cloudclients import ClientRegistry
from tests.sample_ports import gunicorn, imported

pytestmark = pytest.mark.usefixtures("cloudclients_env")


@pytest.fixture
def bucket(emulator_registry: ClientRegistry, unique_name: Callable[[str], str]) -> Iterator[Any]:
    """A fresh bucket in the storage emulator (a google.cloud.storage.Bucket)."""
    created = emulator_registry.storage.create_bucket(unique_name("uploads"))
    yield created
    with contextlib.suppress(Exception):
        created.delete(force=True)


@pytest.fixture
def port_env(monkeypatch: pytest.MonkeyPatch, bucket: Any) -> pytest.MonkeyPatch:
    monkeypatch.setenv("CLOUD_STORAGE_BUCKET", bucket.name)
    monkeypatch.setenv("FLASK_CLOUDCLIENTS_EXIT_HANDLERS", "false")
    return monkeypatch


@pytest.fixture
def sample(port_env: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with imported("storage_upload") as module:
        yield module


def upload(module: ModuleType, content: bytes, filename: str, content_type: str | None = None) -> Any:
    file = (io.BytesIO(content), filename) if content_type is None else (io.BytesIO(content), filename, content_type)
    return module.app.test_client().post("/upload", data={"file": file}, content_type="multipart/form-data")


def test_index_is_the_upload_form(sample: ModuleType) -> None:
    """GET / is a multipart form posting the field ``file`` to /upload."""
    html = sample.app.test_client().get("/").get_data(as_text=True)
    assert 'action="/upload"' in html and 'enctype="multipart/form-data"' in html and 'name="file"' in html


def test_upload_is_stored_with_its_content_type_and_readable_at_the_answered_url(sample: ModuleType,
                                                                                 bucket: Any) -> None:
    """The object is in the bucket with the file's bytes and content type; the answer is its public
    URL, which serves the same bytes without credentials."""
    # (a name whose extension says nothing: the content type must come from the upload itself)
    response = upload(sample, b"This is some test content.", "notes", "text/markdown")
    assert response.status_code == 200
    blob = bucket.get_blob("notes")
    assert blob is not None, "not in the bucket"
    assert (blob.download_as_bytes(), blob.content_type) == (b"This is some test content.", "text/markdown")
    url = response.get_data(as_text=True)
    assert url == blob.public_url
    assert requests.get(url, timeout=5).content == b"This is some test content."


def test_the_object_is_made_public(sample: ModuleType, bucket: Any) -> None:
    """After an upload the object's ACL grants allUsers READER, as the sample's make_public does."""
    assert upload(sample, b"public", "public.bin").status_code == 200
    blob = bucket.blob("public.bin")
    blob.acl.reload()
    assert "READER" in blob.acl.all().get_roles()


def test_binary_content_survives_intact(sample: ModuleType, bucket: Any) -> None:
    """Every byte value, 256 KiB of them, round-trips unchanged. (Werkzeug's test client leaks the
    temporary file it spools a multipart body over 500 KB to, so the test stays under that.)"""
    content = bytes(range(256)) * 1024
    assert upload(sample, content, "blob.bin", "application/octet-stream").status_code == 200
    assert bucket.blob("blob.bin").download_as_bytes() == content


def test_names_that_need_quoting_are_stored_as_given(sample: ModuleType, bucket: Any) -> None:
    """A file name with spaces, unicode and a plus sign is the object name, and the answered URL is
    quoted so that it fetches that object."""
    name = "résumé 2024+final.txt"
    response = upload(sample, b"cv", name, "text/plain")
    assert response.status_code == 200
    url = response.get_data(as_text=True)
    assert urllib.parse.quote(name) in url
    assert bucket.get_blob(name) is not None
    assert requests.get(url, timeout=5).content == b"cv"


def test_uploading_again_replaces_the_object(sample: ModuleType, bucket: Any) -> None:
    """The same name twice: the second upload wins."""
    assert upload(sample, b"first", "same.txt").status_code == 200
    assert upload(sample, b"second", "same.txt").status_code == 200
    assert bucket.blob("same.txt").download_as_bytes() == b"second"


@pytest.mark.parametrize("form", [{}, {"other": "field"}, {"file": (io.BytesIO(b""), "")}],
                         ids=["no-field", "other-field", "no-file-chosen"])
def test_no_file_is_a_400(sample: ModuleType, bucket: Any, form: dict[str, Any]) -> None:
    """No ``file`` field, or a form sent without choosing a file: 400 "No file uploaded.", nothing stored."""
    response = sample.app.test_client().post("/upload", data=form, content_type="multipart/form-data")
    assert (response.status_code, response.get_data(as_text=True)) == (400, "No file uploaded.")
    assert list(bucket.list_blobs()) == []


def test_an_upload_over_the_limit_is_a_413(port_env: pytest.MonkeyPatch, bucket: Any) -> None:
    """Above MAX_UPLOAD_BYTES the request is refused before it is read; nothing is stored."""
    port_env.setenv("MAX_UPLOAD_BYTES", "1000")
    with imported("storage_upload") as module:
        assert upload(module, b"x" * 500, "small.txt").status_code == 200
        assert upload(module, b"x" * 2000, "big.txt").status_code == 413
    assert [b.name for b in bucket.list_blobs()] == ["small.txt"]


def test_a_missing_bucket_is_an_error_not_a_200(port_env: pytest.MonkeyPatch, unique_name: Callable[[str], str]
                                                ) -> None:
    """A bucket that does not exist: 500 (the sample's answer too), never a URL to nothing."""
    port_env.setenv("CLOUD_STORAGE_BUCKET", unique_name("no-such-bucket"))
    with imported("storage_upload") as module:
        module.app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as in production, not raise into the test
        assert upload(module, b"x", "x.txt").status_code == 500


def test_start_refuses_a_missing_bucket_setting(port_env: pytest.MonkeyPatch) -> None:
    """Without CLOUD_STORAGE_BUCKET the app does not start, and says what to set."""
    port_env.delenv("CLOUD_STORAGE_BUCKET")
    with pytest.raises(RuntimeError, match="CLOUD_STORAGE_BUCKET is not set"), imported("storage_upload"):
        pass


@pytest.mark.slow
def test_uploads_under_gunicorn_land_in_the_bucket(cloudclients_env: dict[str, str], bucket: Any) -> None:
    """gunicorn (--preload, 2 workers x 4 threads) serves the port: 12 uploads from a browser-like
    client are all in the bucket with their contents."""
    env = {**cloudclients_env, "CLOUD_STORAGE_BUCKET": bucket.name}
    with gunicorn("storage_upload", env, "--preload", "-w", "2", "--threads", "4") as server:
        for i in range(12):
            response = requests.post(f"{server.url}/upload", timeout=15,
                                     files={"file": (f"file-{i}.txt", f"content {i}".encode(), "text/plain")})
            assert response.status_code == 200, server.log()
    assert {b.name: b.download_as_bytes() for b in bucket.list_blobs()} == {
        f"file-{i}.txt": f"content {i}".encode() for i in range(12)
    }
