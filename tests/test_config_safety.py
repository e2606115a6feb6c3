"""Config as real apps write it: the standard Google variables in app.config are honoured, stray
whitespace is handled, every malformed host and unreadable credentials file is a ConfigError that
names the key and never quotes the file, and the project is optional (emulator IDs allowed there)."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from cloudclients import CloudClients, ConfigError, Settings

P = "CLOUDCLIENTS_"
SECRET = "-----BEGIN PRIVATE KEY-----\nMIIEvSECRETSECRETSECRET\n-----END PRIVATE KEY-----\n"


def settings(config: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    return Settings.from_mapping(config, environ or {})


@pytest.mark.parametrize(
    ("key", "value", "attribute", "expected"),
    [
        ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085", "pubsub_emulator_host", "127.0.0.1:8085"),
        ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023", "storage_emulator_host", "http://127.0.0.1:9023"),
        ("GOOGLE_CLOUD_PROJECT", "sample-project", "project", "sample-project"),
    ],
)
def test_standard_variables_in_app_config_are_honoured(key: str, value: str, attribute: str, expected: str) -> None:
    """app.config["PUBSUB_EMULATOR_HOST"] (no prefix), as Flask users write it, is applied — never
    silently ignored (which sent the app to the real project with the developer's ADC)."""
    assert getattr(settings({key: value}), attribute) == expected


def test_a_credentials_file_in_app_config_is_honoured(tmp_path: Path) -> None:
    """app.config["GOOGLE_APPLICATION_CREDENTIALS"] is read and validated like CLOUDCLIENTS_CREDENTIALS_FILE."""
    path = tmp_path / "key.json"
    path.write_text('{"type": "authorized_user", "client_id": "x", "client_secret": "y", "refresh_token": "z"}')
    assert settings({"GOOGLE_APPLICATION_CREDENTIALS": str(path)}).credentials_file == str(path)
    with pytest.raises(ConfigError, match=r"GOOGLE_APPLICATION_CREDENTIALS='/nonexistent.json' \(from app.config\)"):
        settings({"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent.json"})


def test_the_prefixed_key_wins_and_a_disagreement_is_an_error() -> None:
    """CLOUDCLIENTS_X and the standard name in app.config: equal is fine, different is a ConfigError
    naming both; app.config wins over the environment."""
    same = settings({P + "PUBSUB_EMULATOR_HOST": "127.0.0.1:1", "PUBSUB_EMULATOR_HOST": "127.0.0.1:1"})
    assert same.pubsub_emulator_host == "127.0.0.1:1"
    with pytest.raises(ConfigError, match=r"CLOUDCLIENTS_PUBSUB_EMULATOR_HOST='127.0.0.1:1' and "
                                          r"PUBSUB_EMULATOR_HOST='127.0.0.1:2' .*disagree.*Fix: set only"):
        settings({P + "PUBSUB_EMULATOR_HOST": "127.0.0.1:1", "PUBSUB_EMULATOR_HOST": "127.0.0.1:2"})
    mixed = settings({"PUBSUB_EMULATOR_HOST": "127.0.0.1:3"}, {"PUBSUB_EMULATOR_HOST": "127.0.0.1:4"})
    assert mixed.pubsub_emulator_host == "127.0.0.1:3"


def test_kubernetes_secret_whitespace_is_stripped() -> None:
    """A trailing newline or surrounding spaces (secrets mounted as variables) are stripped; an
    all-whitespace value counts as unset."""
    s = settings({P + "PROJECT": " my-project-1\n", P + "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085\n",
                  P + "STORAGE_EMULATOR_HOST": "\thttp://127.0.0.1:9023/ \n", P + "PUSH_AUDIENCE": "https://a/push\n"},
                 {"GOOGLE_CLOUD_PROJECT": "\n"})
    assert (s.project, s.pubsub_emulator_host, s.storage_emulator_host, s.push_audience) == (
        "my-project-1", "127.0.0.1:8085", "http://127.0.0.1:9023", "https://a/push")
    assert settings({}, {"PUBSUB_EMULATOR_HOST": "  \n"}).pubsub_emulator_host is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PUBSUB_EMULATOR_HOST", "localhost:²"),
        ("PUBSUB_EMULATOR_HOST", "localhost:8085\nextra"),
        ("PUBSUB_EMULATOR_HOST", ":8085"),
        ("PUBSUB_EMULATOR_HOST", "local host:8085"),
        ("PUBSUB_EMULATOR_HOST", "::1:8085"),
        ("PUBSUB_EMULATOR_HOST", "[::1:8085"),
        ("PUBSUB_EMULATOR_HOST", "host:0"),
        ("PUBSUB_EMULATOR_HOST", "host:65536"),
        ("STORAGE_EMULATOR_HOST", "http://[::1"),
        ("STORAGE_EMULATOR_HOST", "http://h:99999"),
        ("STORAGE_EMULATOR_HOST", "http://h:x"),
        ("STORAGE_EMULATOR_HOST", "http://user:pw@h:1"),
        ("STORAGE_EMULATOR_HOST", "http://h:1/path"),
        ("STORAGE_EMULATOR_HOST", "http://bad_host:1"),
        ("STORAGE_EMULATOR_HOST", "http://h:0"),
        ("PUSH_CERTS_URL", "https://[::1"),
        ("PUSH_AUDIENCE", "two\nlines"),
        ("PROJECT", "my project"),
    ],
)
def test_every_malformed_value_is_a_config_error_naming_the_key(key: str, value: str) -> None:
    """Malformed hosts, URLs and values are refused at init_app with a ConfigError naming the key and
    the value — never a bare ValueError from deep inside, never accepted to fail later."""
    with pytest.raises(ConfigError) as info:
        settings({P + key: value})
    assert f"{P}{key}={value!r}" in str(info.value) and "Fix:" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (P + "PUBSUB_EMULATOR_HOST", "localhost\n:8085"),
        ("PUBSUB_EMULATOR_HOST", "localhost\n:8085"),
        (P + "PUBSUB_EMULATOR_HOST", "localhost:8085\n\n1"),
        (P + "PUBSUB_EMULATOR_HOST", "localhost\u200b:8085"),
        (P + "STORAGE_EMULATOR_HOST", "http://local\nhost:9023"),
        (P + "STORAGE_EMULATOR_HOST", "http://localhost:9023\n/"),
        (P + "STORAGE_EMULATOR_HOST", "http://localhost:\t9023"),
        (P + "PUSH_CERTS_URL", "https://www.googleapis.com/oauth2/\nv1/certs"),
        (P + "PROJECT", "my-project\n1"),
        ("GOOGLE_CLOUD_PROJECT", "my-\u00a0project"),
        (P + "PUSH_SERVICE_ACCOUNT", "push@p.iam.gserviceaccount.com\nx"),
    ],
    ids=["host-newline", "unprefixed-host-newline", "host-port-newline", "host-zero-width", "url-newline-in-host",
         "url-newline-before-path", "url-tab-in-port", "certs-url-newline", "project-newline", "project-nbsp",
         "email-newline"],
)
def test_whitespace_or_control_characters_inside_a_value_are_refused(key: str, value: str) -> None:
    """A newline, tab or invisible character left inside a value after stripping (a Kubernetes secret
    pasted with a line break) is a ConfigError naming the key — it used to be accepted: `$` matched
    before a trailing newline and urlsplit silently dropped tabs and newlines while the raw text was
    kept."""
    config: dict[str, Any] = {key: value}
    if key.endswith("PUSH_SERVICE_ACCOUNT"):
        config[P + "PUSH_AUDIENCE"] = "https://a.example/push"
    with pytest.raises(ConfigError) as info:
        settings(config)
    assert f"{key}={value!r}" in str(info.value)
    assert "whitespace or a control character" in str(info.value) and "Fix:" in str(info.value)


def _assert_no_secret(exc: BaseException) -> None:
    texts = [str(exc), repr(exc), *map(repr, exc.args)]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            texts += [str(linked), repr(linked), *map(repr, linked.args)]
    for text in texts:
        assert "SECRET" not in text and "PRIVATE KEY" not in text, text


@pytest.mark.parametrize("case", ["utf-16", "utf-32", "latin-1-with-bom-bytes", "binary", "truncated-json",
                                  "not-an-object", "no-type", "service-account-missing-fields", "huge"])
def test_an_unreadable_credentials_file_never_leaks_its_contents(tmp_path: Path, case: str) -> None:
    """Each broken key file is a ConfigError naming the key and the path; neither the message, its
    arguments nor a chained exception holds any of the file (a UTF-16 file used to raise a
    UnicodeDecodeError carrying the whole private key)."""
    path = tmp_path / "key.json"
    text = '{"type": "service_account", "private_key": "' + SECRET.replace("\n", "\\n") + '"}'
    content = {
        "utf-16": text.encode("utf-16"),
        "utf-32": text.encode("utf-32"),
        "latin-1-with-bom-bytes": b"\xff\xfe" + text.encode("latin-1"),
        "binary": os.urandom(64) + SECRET.encode(),
        "truncated-json": text[:-10].encode(),
        "not-an-object": ("[" + repr(SECRET) + "]").encode(),
        "no-type": ('{"private_key": "' + SECRET.replace("\n", "\\n") + '"}').encode(),
        "service-account-missing-fields": text.encode(),
        "huge": b'{"type": "service_account", "private_key": "' + SECRET.encode() * 40_000 + b'"}',
    }[case]
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        settings({P + "CREDENTIALS_FILE": str(path)})
    assert f"{P}CREDENTIALS_FILE={str(path)!r}" in str(info.value)
    _assert_no_secret(info.value)


@pytest.mark.parametrize("case", ["nul-in-path", "directory", "missing", "not-a-path"])
def test_an_impossible_credentials_path_is_a_config_error(tmp_path: Path, case: str) -> None:
    """A NUL in the path, a directory, a missing file or a non-path value: ConfigError naming the key."""
    value: Any = {"nul-in-path": str(tmp_path) + "/key\x00.json", "directory": str(tmp_path),
                  "missing": str(tmp_path / "absent.json"), "not-a-path": 42}[case]
    with pytest.raises(ConfigError, match=f"{P}CREDENTIALS_FILE="):
        settings({P + "CREDENTIALS_FILE": value})


def test_a_fifo_as_the_credentials_path_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named as the key file: a ConfigError saying "not a regular file" at once (init_app used
    to block forever in open(), waiting for a writer)."""
    fifo = tmp_path / "key.json"
    os.mkfifo(fifo)
    outcome: list[BaseException | Settings] = []

    def read() -> None:
        try:
            outcome.append(settings({P + "CREDENTIALS_FILE": str(fifo)}))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)  # answers at once; the old code never did
    if reader.is_alive():  # release the blocked reader (old code), then fail
        with open(fifo, "wb"):
            pass
        reader.join(timeout=5)
        pytest.fail("reading a FIFO as the credentials file blocked")
    [error] = outcome
    assert isinstance(error, ConfigError)
    assert f"{P}CREDENTIALS_FILE={str(fifo)!r}" in str(error) and "not a regular file" in str(error)


@pytest.mark.parametrize("case", ["socket", "device"])
def test_a_socket_or_device_as_the_credentials_path_is_not_a_regular_file(tmp_path: Path, case: str) -> None:
    """A socket or a device (/dev/null) is "not a regular file" (they used to be read and fail as
    "cannot be read" or "not valid JSON")."""
    if case == "socket":
        path = str(tmp_path / "key.sock")
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
    else:
        path = os.devnull
    try:
        with pytest.raises(ConfigError, match=f"{P}CREDENTIALS_FILE=.*not a regular file"):
            settings({P + "CREDENTIALS_FILE": path})
    finally:
        if case == "socket":
            server.close()


@pytest.mark.parametrize("path", ["/tmp/\ud800.json", "/tmp/\udfff-key.json"])
def test_an_unencodable_credentials_path_is_a_config_error(path: str) -> None:
    """A lone surrogate in the path (the file system cannot encode it) is a ConfigError naming the key,
    from app.config and from the standard variable alike — it was a bare UnicodeEncodeError."""
    for key in (P + "CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS"):
        with pytest.raises(ConfigError, match=f"{key}=.*not a usable path"):
            settings({key: path})


def _key_file(tmp_path: Path, private_key: str) -> Path:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "key-project-1",
                                "client_email": "sa@key-project-1.iam.gserviceaccount.com",
                                "private_key": private_key, "token_uri": "https://oauth2.googleapis.com/token"}))
    return path


def test_a_malformed_private_key_is_refused_at_init_app_without_quoting_it(tmp_path: Path) -> None:
    """A service-account file whose private_key does not parse: init_app raises a ConfigError naming
    the key and the file (it used to pass and fail at the first call in a worker); neither the
    message nor anything chained holds the key."""
    path = _key_file(tmp_path, SECRET)
    app = Flask(__name__)
    app.config.update({P + "CREDENTIALS_FILE": str(path), P + "EXIT_HANDLERS": False})
    with pytest.raises(ConfigError) as info:
        CloudClients(app)
    assert f"{P}CREDENTIALS_FILE={str(path)!r} (from app.config)" in str(info.value)
    assert "'private_key' is not a valid PEM private key" in str(info.value)
    _assert_no_secret(info.value)
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    working = Flask(__name__)
    working.config.update({P + "CREDENTIALS_FILE": str(_key_file(tmp_path, good)), P + "EXIT_HANDLERS": False})
    CloudClients(working)


def test_the_project_is_optional_at_init_app() -> None:
    """No project anywhere is fine at init_app (Cloud Run sets none: it is discovered later, in the
    worker); nothing is fetched."""
    app = Flask(__name__)
    app.config[P + "EXIT_HANDLERS"] = False
    CloudClients(app)
    assert CloudClients.get_settings(app).project is None


@pytest.mark.parametrize("project", ["test", "my_project", "Test-1"])
def test_emulator_project_ids_are_allowed_only_with_an_emulator(project: str) -> None:
    """IDs the emulators accept but the service does not ('test', 'my_project') pass with an
    emulator configured, and are refused with the service's rule without one."""
    assert settings({P + "PROJECT": project, P + "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}).project == project
    with pytest.raises(ConfigError, match=f"{P}PROJECT={project!r}.*not a valid project ID.*Fix"):
        settings({P + "PROJECT": project})


@pytest.mark.parametrize("project", ["test", "my_project"])
def test_an_emulator_only_project_needs_the_pubsub_emulator(project: str) -> None:
    """With only a Storage emulator, an ID only the emulators accept is refused at init_app (Pub/Sub
    would otherwise talk to the real service with project 'test' and fail later), with a fix."""
    with pytest.raises(ConfigError, match=rf"{P}PROJECT={project!r} .*only the emulators accept, and Pub/Sub is "
                                          r"not emulated.*Fix: use a real project ID such as 'test-project'"):
        settings({P + "PROJECT": project, P + "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023"})


def test_a_real_storage_refuses_an_emulator_only_project_when_its_client_is_built() -> None:
    """Pub/Sub emulated, Storage real, project 'test': init_app passes (Pub/Sub can use it), and
    building the Storage client raises a ConfigError naming the key and the fix, before any
    credentials are looked up; the Pub/Sub clients are built."""
    app = Flask(__name__)
    app.config.update({P + "PROJECT": "test", P + "PUBSUB_EMULATOR_HOST": "127.0.0.1:1", P + "EXIT_HANDLERS": False})
    CloudClients(app)
    registry = CloudClients.get_registry(app)
    try:
        with pytest.raises(ConfigError, match=rf"{P}PROJECT='test' .*only the emulators accept, but Storage is not "
                                              rf"emulated.*Fix: .*or set {P}STORAGE_EMULATOR_HOST"):
            registry.storage  # noqa: B018 - builds the client
        assert registry.publisher is not None and registry.subscriber is not None
    finally:
        registry.close(timeout=1)


def test_every_key_can_come_from_the_environment() -> None:
    """CLOUDCLIENTS_* variables in the environment are read under their own names (Cloud Run
    sets variables, not app.config); app.config wins; the standard name comes after the
    CLOUDCLIENTS_ one."""
    s = settings({P + "PUBLISH_TIMEOUT": 3},
                 {P + "PUSH_AUTH": "platform", P + "PUBLISH_TIMEOUT": "7", P + "PROJECT": "env-project-1",
                  "GOOGLE_CLOUD_PROJECT": "other-project"})
    assert (s.push_auth, s.publish_timeout, s.project) == ("platform", 3.0, "env-project-1")
    with pytest.raises(ConfigError, match=r"CLOUDCLIENTS_HEALTH_TIMEOUT='soon' \(from the environment"):
        settings({}, {P + "HEALTH_TIMEOUT": "soon"})
