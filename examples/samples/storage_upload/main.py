"""Cloud Storage uploads on App Engine, on cloudclients: an upload form.

The port of Google's App Engine flexible Storage sample (see
``examples/samples/README.md``)::

    GET  /         an upload form
    POST /upload   multipart field ``file``: stores it in CLOUD_STORAGE_BUCKET under its file
                   name, with its content type, makes it publicly readable and answers 200 with
                   its public URL; 400 without a file, 413 above the size limit

Every worker uses its one Storage client (``get_storage()``), built on first
use — not a client per request as in the sample. A Storage call waits at most
``CLOUDCLIENTS_STORAGE_TIMEOUT`` (10 s), so an unreachable Storage answers 500
well inside gunicorn's 30 s worker timeout.

Configuration, from the environment (``app.yaml``'s ``env_variables``):

``CLOUD_STORAGE_BUCKET`` (required)
    the bucket; its objects are made public one by one (``make_public``), so the bucket
    must use fine-grained access control, not uniform bucket-level access.
``MAX_UPLOAD_BYTES`` (default 32 MiB)
    larger requests are refused with 413 before they are read.
``GOOGLE_CLOUD_PROJECT`` (optional), ``STORAGE_EMULATOR_HOST`` (local runs)
    read by cloudclients itself.
``FLASK_<KEY>``
    any other Flask or cloudclients setting, e.g. ``FLASK_CLOUDCLIENTS_STORAGE_TIMEOUT=5``.

Run it locally on the emulators (from the repository root)::

    cloudclients-emulator --storage-port 9023 --topology examples/samples/storage_upload/topology.json &
    export STORAGE_EMULATOR_HOST=http://127.0.0.1:9023 CLOUD_STORAGE_BUCKET=uploads
    gunicorn --preload -w 2 --threads 4 -b 127.0.0.1:8080 examples.samples.storage_upload.main:app
    curl -F file=@README.md localhost:8080/upload     # prints the object's URL; curl it back
"""

from __future__ import annotations

import os

from flask import Flask, current_app, request

from cloudclients import CloudClients, get_storage

FORM = """<!doctype html>
<title>Upload to Cloud Storage</title>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input type="file" name="file">
  <button type="submit">Upload</button>
</form>
"""


def create_app() -> Flask:
    """Build the app from the environment (see the module docstring).

    :raises RuntimeError: if CLOUD_STORAGE_BUCKET is not set.
    :raises cloudclients.ConfigError: for an invalid cloudclients setting.
    """
    app = Flask(__name__)
    bucket = os.environ.get("CLOUD_STORAGE_BUCKET", "").strip()
    if not bucket:
        raise RuntimeError("CLOUD_STORAGE_BUCKET is not set. Fix: export CLOUD_STORAGE_BUCKET=<your bucket>.")
    app.config["CLOUD_STORAGE_BUCKET"] = bucket
    app.config["MAX_CONTENT_LENGTH"] = int(os.environ.get("MAX_UPLOAD_BYTES", str(32 * 1024 * 1024)))
    app.config.from_prefixed_env()
    CloudClients(app)

    @app.get("/")
    def index() -> str:
        return FORM

    @app.post("/upload")
    def upload() -> tuple[str, int]:
        uploaded = request.files.get("file")
        if not uploaded:  # no field, or a form submitted without choosing a file
            return "No file uploaded.", 400
        blob = get_storage().bucket(current_app.config["CLOUD_STORAGE_BUCKET"]).blob(uploaded.filename)
        blob.upload_from_string(uploaded.read(), content_type=uploaded.content_type)
        blob.make_public()
        return blob.public_url, 200

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
