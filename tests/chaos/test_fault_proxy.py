"""The TCP fault proxy itself, against a loopback echo server: each mode does what it says."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except OSError:  # the proxy reset us: that is the point
            pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with FaultProxy(("127.0.0.1", server.server_address[1]), max_lifetime_s=60) as p:
            yield p
    finally:
        server.shutdown()
        server.server_close()


def _echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def _connect(proxy: FaultProxy, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _broken(sock: socket.socket | None, proxy: FaultProxy | None = None) -> bool:
    """True when the connection (or a new one to `proxy`) is reset or closed within three echoes."""
    try:
        if sock is None:
            assert proxy is not None
            sock = _connect(proxy)
        with sock:
            return any(_echo(sock, b"y") != b"y" for _ in range(3))
    except OSError:
        return True


def test_pass_and_delay(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"hello") == b"hello"
        proxy.set_mode("delay", delay_ms=150)
        began = time.monotonic()
        assert _echo(sock, b"late") == b"late"
        assert time.monotonic() - began >= 0.29  # 150 ms each way
        proxy.set_mode("pass")
        began = time.monotonic()
        assert _echo(sock, b"fast") == b"fast"
        assert time.monotonic() - began < 0.25


def test_reset_breaks_open_and_new_connections(proxy: FaultProxy) -> None:
    sock = _connect(proxy)
    assert _echo(sock, b"x") == b"x"
    proxy.set_mode("reset")
    assert _broken(sock)
    sock.close()
    assert _broken(None, proxy)
    proxy.set_mode("pass")
    with _connect(proxy) as sock2:
        assert _echo(sock2, b"back") == b"back"
    assert proxy.stats.reset >= 2


def test_black_hole_holds_then_heals(proxy: FaultProxy) -> None:
    with _connect(proxy, timeout=0.5) as sock:
        assert _echo(sock, b"a") == b"a"
        proxy.set_mode("blackhole")
        sock.sendall(b"held")
        with pytest.raises(TimeoutError):
            sock.recv(16)
        with _connect(proxy, timeout=0.5) as fresh:  # accepted, never answered
            fresh.sendall(b"new")
            with pytest.raises(TimeoutError):
                fresh.recv(16)
            proxy.set_mode("pass")
            fresh.settimeout(5)
            assert fresh.recv(16) == b"new"
        sock.settimeout(5)
        assert sock.recv(16) == b"held"


def test_refuses_non_loopback_upstream_and_unknown_modes(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(("192.0.2.1", 80))
    with pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("chaos")
