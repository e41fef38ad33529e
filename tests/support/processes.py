"""Run the service's own commands (`paynow-service serve`, `worker`, `grpc` ...) as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from paynow_service.adapters.emulators import free_port

CLI = [sys.executable, "-m", "paynow_service.entrypoints.cli"]


def wait_port(port: int, timeout: float = 30) -> bool:
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


def serve(env: Mapping[str, str], log_dir: Path, **extra: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess("serve", {**env, "PORT": str(port), **extra}, log_dir, port=port).wait_ready()


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
