"""The benchmark protocol's CPU side, one for the load tool and the benches in bench/: CPU ms per event
for each process of a measured phase, the pinned mode, and the commit measured.

- `CpuMeter`: each process's CPU time (`processes.cpu_ticks`: utime + stime of /proc/PID/stat in
  SC_CLK_TCK ticks, its workers included) sampled at the start and the end of every measured turn,
  summed per phase and divided by the phase's events, beside the phase's answer latencies (p50, p95)
  from the same turns. This process is one of them: the sender in the service's turns, the floor in
  the floor's (its own children, the service's processes, are not counted in it). A process that may
  lag behind the traffic (the worker) can have its own count of the events it handled (`counters`,
  e.g. `processes.LogCount` of its log), giving its CPU ms per event it processed too.
- `Placement` (`--pin`): the service's processes on one CPU of their own (as on Cloud Run: a core of
  its own), the emulators and the sender on the other; the floor, which stands for the service, on the
  service's CPU in its turns. Without --pin every process runs unpinned, where the kernel puts it.
- `commit`: what `git rev-parse --short HEAD` prints for the checkout measured.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paynow_loadtest.processes import CLK_TCK, affinity_text, cpu_ticks, pin, process_tree
from paynow_loadtest.results import fmt, percentile

SENDER, FLOOR = "sender", "floor"  # this process's roles: it sends to the service, or it is the floor
EXIT_CANNOT_PIN = 2


class Placement:
    """Where `--pin` puts each process (all its threads, with `os.sched_setaffinity`, as `taskset`)."""

    def __init__(self, service_cpu: int, other_cpu: int) -> None:
        self.service_cpus, self.other_cpus = {service_cpu}, {other_cpu}
        self._saved: dict[int, set[int]] = {}  # each pinned process's CPUs before, restored at the end

    @classmethod
    def choose(cls, pin: bool, prog: str) -> Placement | None:
        """None without --pin. With it, the first two CPUs this process may use (those `nproc` counts);
        with fewer than 2, it says it cannot pin and exits 2, before anything starts."""
        if not pin:
            return None
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            print(f"{prog}: --pin cannot pin: it needs 2 CPUs, nproc is {len(cpus)}", file=sys.stderr)
            raise SystemExit(EXIT_CANNOT_PIN)
        return cls(cpus[0], cpus[1])

    def _pin(self, pid: int, cpus: set[int], *, children: bool = True) -> None:
        if pid not in self._saved:
            with contextlib.suppress(OSError):
                self._saved[pid] = os.sched_getaffinity(pid)
        pin(pid, cpus, children=children)

    def service(self, *pids: int) -> None:
        """The service's processes (serve, worker ...) on the service's CPU."""
        for pid in pids:
            self._pin(pid, self.service_cpus)

    def aside(self, *pids: int) -> None:
        """The emulators on the other CPU, the sender's."""
        for pid in pids:
            self._pin(pid, self.other_cpus)

    def move(self, role: str) -> None:
        """This process for a turn as `role`: the floor on the service's CPU, the sender on the other."""
        cpus = self.service_cpus if role == FLOOR else self.other_cpus
        self._pin(os.getpid(), cpus, children=False)

    def restore(self) -> None:
        """Every process pinned back to the CPUs it had (the ones still running)."""
        for pid, cpus in self._saved.items():
            with contextlib.suppress(OSError):
                pin(pid, cpus, children=pid != os.getpid())
        self._saved.clear()

    def describe(self) -> str:
        service, other = (",".join(map(str, sorted(c))) for c in (self.service_cpus, self.other_cpus))
        return (
            f"the service's processes on CPU {service}, the emulators and the sender on CPU {other}, "
            f"the floor on CPU {service} in its turns"
        )


@dataclass
class Turn:
    """What the caller tells of one measured turn: its events and their latencies (ms)."""

    events: int = 0
    latencies: list[float] = field(default_factory=list)

    def record(self, latencies: Sequence[float], events: int | None = None) -> None:
        self.latencies = list(latencies)
        self.events = len(self.latencies) if events is None else events


@dataclass
class CpuPhase:
    """One phase's turns added up: its events, latencies and each process's CPU ms."""

    turns: int = 0
    events: int = 0
    wall_s: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)
    cpus: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    processed: dict[str, int] = field(default_factory=dict)  # a counted process's own events

    def summary(self) -> dict[str, Any]:
        def per_event(ms: float, events: int | None = None) -> float:
            events = self.events if events is None else events
            return round(ms / events, 4) if events else float("nan")

        return {
            "turns": self.turns,
            "events": self.events,
            "wall_s": round(self.wall_s, 1),
            "p50_ms": round(percentile(self.latencies, 50), 2),
            "p95_ms": round(percentile(self.latencies, 95), 2),
            "cpu_ms": {name: round(ms, 1) for name, ms in self.cpu_ms.items()},
            "ms_per_event": {name: per_event(ms) for name, ms in self.cpu_ms.items()},
            "all_ms_per_event": per_event(sum(self.cpu_ms.values())),
            "cpus": dict(self.cpus),
            "processed": dict(self.processed),
            "ms_per_processed": {n: per_event(self.cpu_ms.get(n, 0.0), k) for n, k in self.processed.items()},
        }


class CpuMeter:
    """CPU ms per event of each process, phase by phase (see the module's docstring)."""

    def __init__(
        self, service: Mapping[str, int], emulators: Mapping[str, int], placement: Placement | None = None,
        counters: Mapping[str, Callable[[], int]] | None = None,
    ) -> None:  # fmt: skip
        self.service = {name: pid for name, pid in service.items() if pid}
        self.emulators = {name: pid for name, pid in emulators.items() if pid}
        self.placement = placement
        self.counters = dict(counters or {})  # name -> the events that process handled so far
        self.phases: dict[str, CpuPhase] = {}

    def pin(self) -> None:
        """With --pin, the service's processes on their CPU and the emulators on the other."""
        if self.placement is not None:
            self.placement.service(*self.service.values())
            self.placement.aside(*self.emulators.values())

    def sample(self, role: str) -> dict[str, tuple[float | None, str]]:
        """Each process's CPU ms so far (None once gone) and its CPUs; this process as `role`."""
        tree, me = process_tree(), os.getpid()
        out: dict[str, tuple[float | None, str]] = {}
        for name, pid in {**self.service, role: me, **self.emulators}.items():
            ticks = cpu_ticks(pid, children=pid != me, tree=tree)
            out[name] = (None if ticks is None else ticks * 1000 / CLK_TCK, affinity_text(pid))
        return out

    @contextlib.contextmanager
    def turn(self, phase: str, role: str = SENDER, *, measured: bool = True) -> Iterator[Turn]:
        """One turn of `phase`, this process as `role` (SENDER or FLOOR), placed for it when pinned.
        Measured: every process's CPU sampled at the turn's start and end and added to the phase, with
        the events and latencies the caller records on the Turn (nothing is added if the turn fails)."""
        if self.placement is not None:
            self.placement.move(role)
        turn = Turn()
        if not measured:
            yield turn
            return
        counted = {name: count() for name, count in self.counters.items()}
        before, began = self.sample(role), time.perf_counter()
        yield turn
        wall_s, after = time.perf_counter() - began, self.sample(role)
        used = {
            name: end - start
            for name, (start, _) in before.items()
            if start is not None and (end := after[name][0]) is not None
        }
        processed = {name: count() - counted[name] for name, count in self.counters.items()}
        self.add(phase, used, turn, wall_s, {name: cpus for name, (_, cpus) in after.items()}, processed)

    def add(
        self, phase: str, cpu_ms: Mapping[str, float], turn: Turn, wall_s: float = 0.0,
        cpus: Mapping[str, str] | None = None, processed: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        """One turn's CPU ms per process, events and latencies (and a counted process's own events),
        added to `phase`."""
        acc = self.phases.setdefault(phase, CpuPhase())
        acc.turns += 1
        acc.events += turn.events
        acc.wall_s += wall_s
        acc.latencies += turn.latencies
        for name, ms in cpu_ms.items():
            acc.cpu_ms[name] = acc.cpu_ms.get(name, 0.0) + ms
        acc.cpus.update(cpus or {})
        for name, count in (processed or {}).items():
            acc.processed[name] = acc.processed.get(name, 0) + count

    def result(self) -> dict[str, Any]:
        """The report's "cpu": the mode, the placement, the processes in order and each phase."""
        seen = {name for phase in self.phases.values() for name in phase.cpu_ms}
        order = [*self.service, SENDER, FLOOR, *self.emulators]
        return {
            "mode": "pinned" if self.placement is not None else "unpinned",
            "placement": self.placement.describe()
            if self.placement is not None
            else "every process where the kernel puts it",
            "clk_tck": CLK_TCK,
            "processes": [name for name in order if name in seen],
            "phases": {name: phase.summary() for name, phase in self.phases.items()},
        }


def ms_per_event(cpu: Mapping[str, Any] | None, phase: str, process: str, key: str = "ms_per_event") -> float:
    """One process's CPU ms per event of one phase of a `CpuMeter.result()` (`key` "ms_per_processed":
    per event it counted itself); NaN when not measured."""
    value = ((cpu or {}).get("phases", {}).get(phase) or {}).get(key, {}).get(process)
    return float("nan") if value is None else float(value)


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def cpu_table(cpu: Mapping[str, Any]) -> list[str]:
    """The "CPU ms per event" table in Markdown: a row per phase, its events and latencies beside each
    process's CPU ms per event (and all of them together), then where each process ran."""
    names: list[str] = list(cpu["processes"])
    header = ["phase", "turns", "events", "p50 ms", "p95 ms", *names, "all"]
    lines = [
        f"CPU ms per event, {cpu['mode']} ({cpu['placement']}); CPU time from /proc/PID/stat "
        f"(utime + stime, {cpu['clk_tck']} ticks/s), sampled at the start and end of each turn:",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    where: dict[str, list[str]] = {}
    for phase, p in cpu["phases"].items():
        cells = [phase, p["turns"], p["events"], fmt(p["p50_ms"], 2), fmt(p["p95_ms"], 2)]
        cells += [_ms(p["ms_per_event"].get(name)) for name in names] + [_ms(p["all_ms_per_event"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        for name, cpus in p["cpus"].items():
            if cpus not in where.setdefault(name, []):
                where[name].append(cpus)
    lines += [
        "",
        "CPUs each process ran on: " + ", ".join(f"{n} {'/'.join(where[n])}" for n in names if n in where),
    ]
    counted = [
        f"{phase}: {name} {n} events, {_ms(p['ms_per_processed'][name])} CPU ms each"
        for phase, p in cpu["phases"].items()
        for name, n in p.get("processed", {}).items()
    ]
    if counted:
        lines += ["", "Events a counted process handled in these turns (its own log): " + "; ".join(counted)]
    return lines


def commit(*starts: Path) -> str:
    """What `git rev-parse --short HEAD` prints (its first 7 hex digits) for the checkout at or above the
    first of `starts` inside one (default: this package's, then the working directory), read from .git
    itself: no git process runs beside the measurement. "unknown" outside a checkout."""
    for start in starts or (Path(__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            if (folder / ".git").exists():
                return (_head(folder / ".git") or "unknown")[:7]
    return "unknown"


def _head(git: Path) -> str | None:
    """HEAD's commit: detached, a loose ref or a packed one (a worktree's .git file followed)."""
    with contextlib.suppress(OSError, IndexError):
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = (git.parent / git.read_text().split(":", 1)[1].strip()).resolve()
        common = git / "commondir"
        shared = (git / common.read_text().strip()).resolve() if common.is_file() else git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        for base in (git, shared):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        for line in (shared / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return None
