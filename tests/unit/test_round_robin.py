"""paynow_loadtest.round_robin, the replicas' load balancer, in front of two loopback servers that
answer with their own name: each new connection (or request) to the next one, a dead one skipped."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from paynow_loadtest.round_robin import RoundRobinProxy, read_message
from paynow_service.adapters.emulators import free_port

pytestmark = pytest.mark.timeout(60)


class _Replica(socketserver.ThreadingTCPServer):
    """A replica named `name`: `echo` sends back name + each chunk; `http` answers each request with
    its name as the body (keep-alive), and a body of `drop` with a close and no answer. `kill` closes
    the listening socket and every open connection, as a crash would."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def kill(self) -> None:
        self.shutdown()
        self.server_close()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(socketserver.BaseRequestHandler):
    server: _Replica

    def handle(self) -> None:
        with self.server.lock:
            self.server.open.add(self.request)
        try:
            if self.server.kind == "echo":
                while data := self.request.recv(4096):
                    self.request.sendall(self.server.name.encode() + b":" + data)
            else:
                self._http()
        except OSError:
            pass
        finally:
            with self.server.lock:
                self.server.open.discard(self.request)

    def _http(self) -> None:
        stream = self.request.makefile("rb")
        with stream:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = stream.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = stream.read(length)
                if body == b"drop":
                    return
                name = self.server.name.encode()
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name))


@contextlib.contextmanager
def _replicas(kind: str, per: str) -> Iterator[tuple[RoundRobinProxy, _Replica, _Replica]]:
    a, b = _Replica("a", kind), _Replica("b", kind)
    proxy = RoundRobinProxy([("127.0.0.1", a.port), ("127.0.0.1", b.port)], per=per, max_lifetime_s=60)
    try:
        with proxy:
            yield proxy, a, b
    finally:
        for replica in (a, b):
            with contextlib.suppress(OSError):
                replica.kill()


def _echo(port: int, payload: bytes = b"hi") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_each_new_connection_goes_to_the_next_replica_and_a_dead_one_is_skipped() -> None:
    with _replicas("echo", "connection") as (proxy, a, b):
        assert [_echo(proxy.port) for _ in range(4)] == [b"a:hi", b"b:hi", b"a:hi", b"b:hi"]
        # One connection stays on its replica; when the replica dies, the client's connection ends too.
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with held:
            held.sendall(b"x")
            assert held.recv(4096) == b"a:x"
            held.sendall(b"y")
            assert held.recv(4096) == b"a:y"
            a.kill()
            assert held.recv(4096) == b""
        assert [_echo(proxy.port) for _ in range(3)] == [b"b:hi"] * 3
        stats = proxy.snapshot()
        assert [s.connections for s in stats] == [3, 5]
        assert stats[0].refused >= 1  # skipped: its turn came while it was dead
        assert stats[1].refused == 0
        b.kill()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            assert sock.recv(4096) == b""  # nobody left: the connection is closed at once
        assert proxy.stats.unrouted == 1


def _post(client: http.client.HTTPConnection, body: bytes = b"hi") -> tuple[int, bytes]:
    client.request("POST", "/x", body=body)
    response = client.getresponse()
    return response.status, response.read()


def test_each_request_goes_to_the_next_replica_over_one_client_connection() -> None:
    with _replicas("http", "request") as (proxy, _, b):
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            assert [_post(client) for _ in range(4)] == [(200, b"a"), (200, b"b")] * 2
            client.request("GET", "/healthz")
            assert client.getresponse().read() == b"a"
            b.kill()  # its kept-alive connection closes: the next request to it finds it refused
            time.sleep(0.2)  # the proxy sees the close first (else that request would get a 502)
            assert [_post(client) for _ in range(3)] == [(200, b"a")] * 3
            stats = proxy.snapshot()
            assert proxy.stats.accepted == 1  # one client connection for all of it
            assert stats[0].answers == {"POST 200": 5, "GET 200": 1}
            assert stats[0].answered("POST", ok=True) == 5
            assert stats[1].answers == {"POST 200": 2}
            assert stats[1].refused >= 1
            assert [s.connections for s in stats] == [1, 1]  # each replica's connection kept alive
        finally:
            client.close()


def test_a_replica_that_dies_with_the_request_gives_a_502_and_the_next_one_answers() -> None:
    with _replicas("http", "request") as (proxy, _, _):
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            status, body = _post(client, b"drop")  # a closes without answering
            assert (status, body) == (502, b'{"error":"upstream_failed"}')
            assert _post(client) == (200, b"b")  # not re-sent to b: the client retries, as PayNow does
            assert _post(client) == (200, b"a")
            stats = proxy.snapshot()
            assert (stats[0].failed, stats[1].failed) == (1, 0)
        finally:
            client.close()


def test_no_replica_is_a_502_and_upstreams_must_be_loopback() -> None:
    with RoundRobinProxy([("127.0.0.1", free_port())], max_lifetime_s=30) as proxy:
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            assert _post(client) == (502, b'{"error":"no_replica"}')
        finally:
            client.close()
        assert proxy.stats.unrouted == 1
        assert proxy.snapshot()[0].refused == 1
    with pytest.raises(ValueError, match="loopback"):
        RoundRobinProxy([("10.0.0.1", 80)])
    with pytest.raises(ValueError, match="per"):
        RoundRobinProxy([("127.0.0.1", 80)], per="packet")


async def test_read_message_frames_chunked_and_close_delimited_answers() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n")
    reader.feed_data(b"HTTP/1.0 200 OK\r\n\r\nrest")
    reader.feed_eof()
    chunked = await read_message(reader, response=True)
    assert (chunked.body, chunked.keep_alive) == (b"3\r\nabc\r\n0\r\nX: y\r\n\r\n", True)
    to_close = await read_message(reader, response=True)
    assert (to_close.body, to_close.keep_alive) == (b"rest", False)
