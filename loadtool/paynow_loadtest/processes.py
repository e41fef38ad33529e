"""The service's own commands (`paynow-service serve`, `worker`, `grpc` ...) as real child processes,
and their memory sampled from /proc while they run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

CLI = [sys.executable, "-m", "paynow_service.entrypoints.cli"]


def wait_port(port: int, timeout: float = 30) -> bool:
    """Whether something listens on 127.0.0.1:`port` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.1)
    return False


def _autogroup_nice(pid: int, nice: int) -> None:
    """Give the child's scheduling group the child's niceness. With the kernel's autogroup on, each
    session (the child has its own: start_new_session) is scheduled as one group against the others,
    and a process's own niceness counts only inside its group: `nice -n 10` alone gave the child no
    less CPU than serve's. Best effort: kernels without autogroup have no such file."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


class ServiceProcess:
    """One `paynow-service COMMAND` child with its own log file; stopped with SIGTERM."""

    def __init__(
        self,
        command: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        port: int | None = None,
        nice: int = 0,
        argv: Sequence[str] = (),
    ) -> None:
        """`argv` replaces `paynow-service COMMAND` (a test's own entry point, e.g. with a test plugin)."""
        self.command = command
        self.port = port
        self.log_path = log_dir / f"{command}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [*(["nice", "-n", str(nice)] if nice else []), *(argv or [*CLI, command])],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if nice:
            _autogroup_nice(self.process.pid, nice)

    def wait_ready(self, timeout: float = 40) -> ServiceProcess:
        if self.port is not None and not wait_port(self.port, timeout):
            self.stop()
            raise RuntimeError(f"{self.command} did not listen on {self.port}:\n{self.logs()[-3000:]}")
        return self

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode


class RssSampler:
    """Samples VmRSS of some processes from /proc (no dependency) every `interval_s`."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.5) -> None:
        self.pids = {k: v for k, v in pids.items() if v}
        self.interval_s = interval_s
        self.peak_kb: dict[str, int] = dict.fromkeys(self.pids, 0)
        self.last_kb: dict[str, int] = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    @staticmethod
    def read_kb(pid: int, field_name: str = "VmRSS") -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            kb = self.read_kb(pid)
            if kb:
                self.last_kb[name] = kb
                self.peak_kb[name] = max(self.peak_kb[name], kb)

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()
        return {
            name: {
                "peak_mib": round(self.peak_kb[name] / 1024, 1),
                "last_mib": round(self.last_kb[name] / 1024, 1),
                "hwm_mib": round(self.read_kb(pid, "VmHWM") / 1024, 1),
            }
            for name, pid in self.pids.items()
        }
