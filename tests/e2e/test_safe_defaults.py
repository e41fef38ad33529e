"""Safe defaults of the real commands: `serve` without HTTP_ROUTES is the public webhook service
only; a disabled auth needs both emulators and then listens on loopback only; certs over https."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from paynow_loadtest.processes import ServiceProcess
from paynow_service.adapters.emulators import EmulatorStack, free_port
from tests.support.processes import run_cli, serve
from tests.support.stack import stack_env, write_catalog

# 127.0.0.1 as /proc/net/tcp writes it, and as tcp6 writes ::ffff:127.0.0.1 (gRPC's socket).
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}
DISABLED_LINE = "Auth disabled: listening on 127.0.0.1 only"


def listen_address(port: int) -> str:
    """The local address of the listening TCP socket on `port` (hex, as in /proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                return address
    raise AssertionError(f"nothing listens on {port}")


def log_entries(process: ServiceProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]


@pytest.mark.e2e
@pytest.mark.emulators
def test_serve_without_http_routes_serves_only_the_webhook_and_health(
    emulators: EmulatorStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HTTP_ROUTES", raising=False)
    env = stack_env(emulators.env(), write_catalog(tmp_path))  # both auths disabled, both emulators
    assert "HTTP_ROUTES" not in env
    http = serve(env, tmp_path)
    base = f"http://127.0.0.1:{http.port}"
    try:
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 404
        points = httpx.post(
            f"{base}/paynow.points.v1.PointsService/GetBalance", json={"uid": "u1"}, timeout=10
        )
        assert points.status_code == 404
        assert httpx.post(f"{base}/api/tasks/paynow/process", content=b"{}", timeout=10).status_code == 404
        assert httpx.post(f"{base}/api/paynow/webhook", content=b"{}", timeout=10).status_code == 401
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        assert listen_address(http.port) in LOOPBACK
    finally:
        http.stop()
    (started,) = [e for e in log_entries(http) if e["message"] == "HTTP app started"]
    assert started["routes"] == ["webhook"]
    (loopback,) = [e for e in log_entries(http) if e["message"] == DISABLED_LINE]
    assert loopback["disabled"] == ["PUSH_AUTH", "POINTS_AUTH"]


@pytest.mark.e2e
@pytest.mark.emulators
def test_grpc_with_points_auth_disabled_listens_on_loopback_only(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    port = free_port()
    env = {**emulators.env(), "POINTS_AUTH": "disabled", "GRPC_PORT": str(port)}
    grpc = ServiceProcess("grpc", env, tmp_path, port=port).wait_ready()
    try:
        assert listen_address(port) in LOOPBACK
    finally:
        grpc.stop()
    (loopback,) = [e for e in log_entries(grpc) if e["message"] == DISABLED_LINE]
    assert (loopback["disabled"], loopback["host"]) == (["POINTS_AUTH"], "127.0.0.1")


@pytest.mark.parametrize(
    ("command", "env", "says"),
    [
        # Only the Pub/Sub emulator: the Firestore client would reach real Firestore.
        (
            "serve",
            {"PUSH_AUTH": "disabled", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"},
            ("PUSH_AUTH=disabled", "FIRESTORE_EMULATOR_HOST is not set"),
        ),
        ("serve", {"PUSH_AUTH": "disabled"}, ("PUSH_AUTH=disabled", "PUBSUB_EMULATOR_HOST is not set")),
        (
            "grpc",
            {"POINTS_AUTH": "disabled", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"},
            ("POINTS_AUTH=disabled", "PUBSUB_EMULATOR_HOST is not set"),
        ),
        ("serve", {"PUSH_CERTS_URL": "http://certs.example.com/certs"}, ("PUSH_CERTS_URL=", "https")),
        ("grpc", {"POINTS_CERTS_URL": "http://127.0.0.1:9/certs"}, ("POINTS_CERTS_URL=", "https")),
    ],
)
def test_unsafe_settings_stop_the_command_at_start_with_one_line(
    command: str, env: dict[str, str], says: tuple[str, ...]
) -> None:
    # An emulator host the caller leaves out is set empty: the session's emulators may be in os.environ.
    unset = {"PUBSUB_EMULATOR_HOST": "", "FIRESTORE_EMULATOR_HOST": ""}
    result = run_cli(command, env={**unset, **env}, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("paynow-service: configuration error: ")
    assert all(part in lines[0] for part in says), lines[0]
    assert result.stdout == ""
