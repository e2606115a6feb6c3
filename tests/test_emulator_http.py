"""The emulator's HTTP/1.1 side against hostile and unusual input, over raw sockets; readiness; the
admin API's validation; the warning when bound beyond loopback.

Raw sockets send exactly the bytes under test (no client library would send a bad
Content-Length); urllib covers the ordinary REST calls.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cloudclients.testing import free_port
from tests.emulator_proc import PROJECT, cpu_seconds, emulator, http, registry
from tests.helpers import wait_for

pytest.importorskip("cloudclients_emulator", reason="the emulator package (pip install -e emulator/) is needed")


def address(env: dict[str, str]) -> tuple[str, int]:
    host, port = env["PUBSUB_EMULATOR_HOST"].rsplit(":", 1)
    return host, int(port)


def exchange(env: dict[str, str], data: bytes, timeout: float = 5.0) -> bytes:
    """Send *data* on a new connection; everything the server sends until it closes or goes quiet."""
    with socket.create_connection(address(env), timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


@pytest.mark.slow
def test_a_half_sent_request_is_answered_408_and_closed() -> None:
    """Headers promising 100 bytes, 3 sent: within the request timeout (default 10 s) the server
    answers 408 and closes, instead of holding the connection (and, before, a thread) for ever."""
    with emulator() as (_, env):
        held = [socket.create_connection(address(env), timeout=20) for _ in range(50)]
        try:
            for sock in held:
                sock.sendall(b"POST /v1/projects/p/topics/t:publish HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 100\r\n\r\nabc")
            assert http(f"http://{env['PUBSUB_EMULATOR_HOST']}/") == (200, "Ok")  # others are served meanwhile
            began = time.monotonic()
            answer = read_all(held[0])
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert time.monotonic() - began < 15
            assert all(read_all(sock).startswith(b"HTTP/1.1 408 ") for sock in held[1:])
        finally:
            for sock in held:
                sock.close()


@pytest.mark.parametrize("length", [b"-1", b"ten", b"1e3"])
def test_a_bad_content_length_gets_400(length: bytes) -> None:
    """A negative or non-numeric Content-Length is refused with 400 (it used to hang or drop)."""
    with emulator() as (_, env):
        answer = exchange(env, b"POST /admin/faults HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}")
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_a_chunked_request_body_is_read() -> None:
    """REST Publish with Transfer-Encoding: chunked publishes the message."""
    with emulator() as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        assert http(f"{base}/v1/projects/{PROJECT}/topics/chunked", "PUT", {})[0] == 200
        body = json.dumps({"messages": [{"data": base64.b64encode(b"in chunks").decode()}]}).encode()
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
        answer = exchange(env, b"POST /v1/projects/" + PROJECT.encode() + b"/topics/chunked:publish HTTP/1.1\r\n"
                          b"Host: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n" + chunked)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert b'"messageIds"' in answer


def test_head_has_no_body_and_the_next_response_on_the_connection_is_intact() -> None:
    """HEAD / answers the headers of GET / without the body; a GET after it on the same keep-alive
    connection reads cleanly."""
    with emulator() as (_, env):
        answer = exchange(env, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, rest = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 2" in head.lower()
        assert rest.startswith(b"HTTP/1.1 200 "), rest[:200]
        assert rest.endswith(b"\r\n\r\nOk")


def test_rest_resource_names_are_percent_decoded() -> None:
    """PUT .../topics/my%2Btopic creates projects/P/topics/my+topic (what a REST client sends for it)."""
    with emulator() as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        status, body = http(f"{base}/v1/projects/{PROJECT}/topics/my%2Btopic", "PUT", {})
        assert status == 200 and body["name"] == f"projects/{PROJECT}/topics/my+topic"
        reg = registry(env)
        try:
            assert reg.publisher.get_topic(topic=f"projects/{PROJECT}/topics/my+topic").name.endswith("my+topic")
        finally:
            reg.close(timeout=5)


def test_rest_publish_over_the_service_limit_is_refused() -> None:
    """A REST Publish of 11 MB (the service refuses > 10 MiB) gets 400 INVALID_ARGUMENT; a body
    over the HTTP limit (32 MiB) gets 413 without being read."""
    with emulator() as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        assert http(f"{base}/v1/projects/{PROJECT}/topics/big", "PUT", {})[0] == 200
        data = base64.b64encode(b"x" * (11 * 1000 * 1000)).decode()
        status, body = http(f"{base}/v1/projects/{PROJECT}/topics/big:publish", "POST", {"messages": [{"data": data}]})
        assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
        assert "10485760" in body["error"]["message"]
        answer = exchange(env, b"POST /v1/projects/p/topics/big:publish HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 40000000\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


@pytest.mark.slow
def test_out_of_file_descriptors_the_server_backs_off_instead_of_spinning() -> None:
    """With its file descriptors used up by idle connections the emulator does not burn CPU
    retrying accept(), and serves again once they close."""
    def few_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    with emulator("--log-level", "ERROR", preexec_fn=few_fds) as (proc, env):
        conns = []
        try:
            for _ in range(80):
                conns.append(socket.create_connection(address(env), timeout=5))  # queued by the kernel past the limit
            time.sleep(1.0)
            before, began = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(3.0)
            busy = (cpu_seconds(proc.pid) - before) / (time.monotonic() - began)
            assert busy < 0.3, f"the emulator used {busy:.0%} of a core while out of file descriptors"
        finally:
            for conn in conns:
                conn.close()

        def answers() -> bool:
            try:
                answer = http(f"http://{env['PUBSUB_EMULATOR_HOST']}/")
            except OSError:
                return False
            assert answer == (200, "Ok")
            return True

        assert wait_for(answers, 20, interval=0.2), "the emulator stopped answering"


def test_ready_only_once_the_topology_is_loaded(tmp_path: Path) -> None:
    """GET / says Ok only when every topic of --topology exists (the last of 3,000 included)."""
    topics = [{"name": f"topic-{i}", "subscriptions": [{"name": f"sub-{i}"}]} for i in range(3000)]
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps({"topics": topics}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cloudclients_emulator", "--host-port", f"127.0.0.1:{port}",
                             "--project", PROJECT, "--topology", str(topology)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def ready() -> bool:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                return bool(resp.read() == b"Ok")
            return False

        assert wait_for(ready, 60, interval=0.002), "never ready"
        status, _ = http(f"http://127.0.0.1:{port}/v1/projects/{PROJECT}/topics/topic-2999")
        assert status == 200
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"method": "GetTopic", "count": 1e400}', "'count' must be"),
        (b'{"method": "GetTopic", "delay_ms": 1e17}', "'delay_ms' must be"),
        (b'{"method": "GetTopic", "count": true}', "'count' must be"),
        (b'{"method": "publish"}', "did you mean 'Publish'"),
        (b'{"method": "NoSuchRpc"}', "is not an RPC"),
        (b'{"method": "GetTopic", "colour": "red"}', "unknown field 'colour'"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "larger than"),
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
        (b"{not json", "not JSON"),
    ],
    ids=["count-1e400", "delay-1e17", "count-bool", "lowercase-method", "unknown-method", "unknown-field",
         "array", "200-KB", "deep-nesting", "not-json"],
)
def test_admin_faults_refuse_bad_input_with_400_and_a_reason(body: bytes, says: str) -> None:
    """Every bad fault spec gets 400 with the reason (none drops the connection, none is armed)."""
    with emulator() as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        status, answer = http(base + "/admin/faults", "POST", raw=body)
        assert status == 400 and says in answer["error"], answer
        assert http(base + "/admin/faults")[1] == {"faults": []}


def test_admin_break_streams_refuses_ok_and_unknown_statuses() -> None:
    """Ending streams with OK would stop subscribers for good: refused, like unknown codes."""
    with emulator() as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        for status_name in ("OK", "NOPE", 14):
            status, answer = http(base + "/admin/break-streams", "POST", {"status": status_name})
            assert status == 400 and "status" in answer["error"]
        assert http(base + "/admin/break-streams", "POST", {"status": "unavailable"})[0] == 200
        assert http(base + "/admin/stats", "POST", {})[0] == 405


def test_binding_beyond_loopback_warns_that_the_admin_api_is_open() -> None:
    """Asked to listen on a non-loopback address (here one this machine does not have, so nothing
    is exposed), the emulator warns first, then fails with a one-line reason."""
    done = subprocess.run([sys.executable, "-m", "cloudclients_emulator", "--host-port", "192.0.2.1:0"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert "WARNING" in done.stderr and "admin API" in done.stderr and "unauthenticated" in done.stderr
    assert done.returncode == 2 and "cannot listen on 192.0.2.1:0" in done.stderr
    assert "Traceback" not in done.stderr


def test_loopback_addresses_are_told_apart() -> None:
    from cloudclients_emulator.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.5", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.10", "example.com"))


def test_pipelined_requests_are_answered_in_order() -> None:
    """Three requests in one write on one connection get three answers, in order."""
    with emulator() as (_, env):
        answer = exchange(env, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /admin/faults HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert statuses == [b"200", b"200", b"404"]



def exchange_to_close(env: dict[str, str], data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Like :func:`exchange`; also whether the server closed the connection (rather than went quiet)."""
    chunks = []
    with socket.create_connection(address(env), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            return b"".join(chunks), False
    return b"".join(chunks), True


def test_content_length_with_chunked_is_refused_and_the_connection_closed() -> None:
    """A request with both Content-Length and Transfer-Encoding: chunked (the request-smuggling shape)
    gets 400 and the connection is closed (RFC 9112 section 6.1), so bytes hidden behind it are never read
    as a request of their own."""
    with emulator() as (_, env):
        smuggled = b"GET /admin/stats HTTP/1.1\r\nHost: x\r\n\r\n"
        answer, closed = exchange_to_close(env, b"POST /admin/faults HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                           + str(5 + len(smuggled)).encode()
                                           + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"400"], answer[:500]
        assert b"connection: close" in answer.lower()
        assert closed, "the connection stayed open after the ambiguous request"


def _head(size: int) -> bytes:
    """A GET / whose head (request line to the blank line) is exactly *size* bytes."""
    start, end = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"\r\nConnection: close\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize(("size", "status"), [(64 * 1024, b"200"), (64 * 1024 + 1, b"431"), (70_000, b"431")])
def test_heads_are_limited_to_64_kib(size: int, status: bytes) -> None:
    """A request head of up to 64 KiB is served; one byte more is 431 and the connection closed, even when
    the whole head arrives in one piece (the parser's own limit covers only heads still incomplete)."""
    with emulator() as (_, env):
        answer, closed = exchange_to_close(env, _head(size))
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [status], answer[:300]
        assert closed
