"""`paynow-service dev` (what `make run` runs): the whole stack up, then Ctrl-C stops all of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from paynow_service.adapters.emulators import free_port, sdk_root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        match = re.search(r"^PPid:\s+(\d+)", text, re.M)
        if match and int(match.group(1)) == pid:
            child = int(status.parent.name)
            found |= {child, *_descendants(child)}
    return found


def test_dev_runs_the_stack_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    if sdk_root() is None:
        pytest.skip("gcloud SDK not installed: the dev stack needs its emulators")
    http_port, grpc_port = free_port(), free_port()
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115 (closed below)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paynow_service.entrypoints.cli",
            "dev",
            "--port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and dev.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready and "send-test-webhook" in (tmp_path / "dev.log").read_text():
                break
            time.sleep(0.3)
        output = (tmp_path / "dev.log").read_text()
        assert ready, output[-3000:]
        started = _descendants(dev.pid)
        assert len(started) >= 5, "emulators (2), serve, grpc and worker"
        assert "Send a signed test webhook" in output
        assert f"127.0.0.1:{grpc_port}" in output
        dev.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert dev.wait(60) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
        log.close()
    time.sleep(0.5)
    left = [pid for pid in started if _alive(pid)]
    assert left == [], f"processes left behind: {left}"
