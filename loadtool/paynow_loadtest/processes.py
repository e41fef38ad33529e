"""The service's own commands (`paynow-service serve`, `worker`, `grpc` ...) as real child processes,
their memory sampled from /proc while they run, and the /proc side of the benchmark protocol (`cpu`):
a process's CPU time (`cpu_ticks`), its CPUs (`pin`, `affinity_text`) and who listens on a port."""

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
CLK_TCK = os.sysconf("SC_CLK_TCK")  # the unit of /proc/PID/stat's times
# Longer than the service's log writer's interval (50 ms) plus a busy machine's scheduling delay.
LOG_SETTLE_S = 0.25
# stat's fields 14-17 (utime, stime, cutime, cstime), counted from the state (field 3) after the ")"
_UTIME, _STIME, _TIMES = 11, 12, slice(11, 15)


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

    def logs(self, settle_s: float = LOG_SETTLE_S) -> str:
        """The process's output so far. A running service writes its log lines in batches (every
        50 ms, paynow_service/log_queue.py): wait `settle_s` first, so that a line logged before this
        call is in the file."""
        if self.process.poll() is None and settle_s > 0:
            time.sleep(settle_s)
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


class LogCount:
    """How many complete lines of a process's log hold `needle` so far, read incrementally: the events a
    process that lags behind the traffic (the worker) really handled in a turn (`cpu.CpuMeter`)."""

    def __init__(self, path: Path, needle: str) -> None:
        self.path, self.needle = path, needle.encode()
        self.count, self._offset, self._partial = 0, 0, b""

    def __call__(self) -> int:
        with contextlib.suppress(OSError), open(self.path, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
            self._offset += len(chunk)
            data = self._partial + chunk
            cut = data.rfind(b"\n") + 1
            self.count += data[:cut].count(self.needle)
            self._partial = data[cut:]
        return self.count


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


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (the name in parentheses may hold spaces); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree() -> dict[int, list[int]]:
    """Each live process's children, from the ppid of every /proc/PID/stat (no /proc/PID/task/*/children
    on kernels without CONFIG_PROC_CHILDREN)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def cpu_ticks(pid: int, *, children: bool = True, tree: dict[int, list[int]] | None = None) -> int | None:
    """CPU time of `pid` in clock ticks (CLK_TCK a second): utime + stime of /proc/PID/stat, every thread.
    With `children` (a process with workers), also the children it waited for (cutime + cstime) and its
    live descendants, each the same way. None when the process is gone."""
    fields = _stat(pid)
    if fields is None:
        return None
    if not children:
        return int(fields[_UTIME]) + int(fields[_STIME])
    tree = process_tree() if tree is None else tree
    total = sum(int(value) for value in fields[_TIMES])
    for child in tree.get(pid, []):
        total += cpu_ticks(child, tree=tree) or 0
    return total


def threads(pid: int, *, children: bool = True) -> list[int]:
    """Every thread id of `pid` (and, with `children`, of its live descendants)."""
    pids = [pid]
    if children:
        tree = process_tree()
        for parent in pids:  # grows while walked: breadth first
            pids += tree.get(parent, [])
    found: list[int] = []
    for each in pids:
        with contextlib.suppress(OSError):
            found += [int(task.name) for task in Path(f"/proc/{each}/task").iterdir()]
    return found


def pin(pid: int, cpus: set[int], *, children: bool = True) -> None:
    """Every thread of `pid` (and of its descendants) on `cpus`, as `taskset -a -p` does: one
    `os.sched_setaffinity` per thread. Repeated until no thread is left elsewhere: a thread started
    meanwhile inherits its creator's CPUs; the ones started later inherit these."""
    for _ in range(5):
        moved = False
        for tid in threads(pid, children=children):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                if os.sched_getaffinity(tid) != cpus:
                    os.sched_setaffinity(tid, cpus)
                    moved = True
        if not moved:
            return


def affinity_text(pid: int) -> str:
    """The CPUs `pid` may run on, as `taskset -c` writes them ("0", "0-1", "0,2"); "?" when gone."""
    try:
        cpus = sorted(os.sched_getaffinity(pid))
    except OSError:
        return "?"
    runs: list[list[int]] = []
    for cpu in cpus:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` (an emulator this tool did not start), from /proc/net/tcp and
    the socket links of /proc/PID/fd; None when none is found (or it belongs to someone else)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cells = line.split()
                if len(cells) > 9 and cells[3] == "0A" and int(cells[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cells[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None
