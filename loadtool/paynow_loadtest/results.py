"""What a phase measured: each answer (`Sample`) and each of the app's spends (`SpendSample`), and
their summaries; one percentile for all of them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SPEND_OUTCOMES = ("spent", "refused", "unknown", "inconsistent")
TARGET_P95_MS = 50.0  # the answer p95 ceiling: the target, the plot's line, find-max's criterion


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


@dataclass
class SpendSample:
    t: float  # when the spend started, seconds after the phase started
    ms: float
    outcome: str
    detail: str = ""  # the error's class when not spent


@dataclass
class SpendStats:
    """One phase's spends: outcomes and latency as the tool saw them (unknowns not yet re-read)."""

    samples: list[SpendSample] = field(default_factory=list)
    skipped: int = 0  # the origin was never accepted
    retries: int = 0  # contention retries (AppDouble's on_retry)

    def absorb(self, part: SpendStats, offset_s: float) -> None:
        for sample in part.samples:
            sample.t += offset_s
        self.samples += part.samples
        self.skipped += part.skipped
        self.retries += part.retries

    def summary(self) -> dict[str, Any]:
        ms = [s.ms for s in self.samples]
        outcomes = Counter(s.outcome for s in self.samples)
        return {
            "attempted": len(self.samples),
            **{name: outcomes[name] for name in SPEND_OUTCOMES},
            "skipped": self.skipped,
            "retries": self.retries,
            "p50_ms": round(percentile(ms, 50), 2),
            "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2) if ms else float("nan"),
            "errors": dict(
                Counter(s.detail for s in self.samples if s.outcome in ("unknown", "inconsistent"))
            ),
        }


@dataclass
class Sample:
    t: float  # when the request started, seconds after the phase started
    ms: float  # answer latency
    status: int  # HTTP status, 0 for a transport error or timeout
    outcome: str  # the answer's status (queued, duplicate, ignored, processed ...) or the error
    label: str
    retry: int  # 0 for the first try of a delivery
    event_id: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class PhaseResult:
    name: str
    rate: float
    duration: float
    samples: list[Sample] = field(default_factory=list)
    skipped: int = 0  # a refund or renewal whose origin was never accepted
    wall_s: float = 0.0  # first to last request start
    lag_s: float = 0.0  # how far behind schedule the sender ran at most
    spends: SpendStats = field(default_factory=SpendStats)  # the app's spends in this phase

    @property
    def first_tries(self) -> list[Sample]:
        return [s for s in self.samples if s.retry == 0]

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if not s.ok)

    def latencies(self) -> list[float]:
        return [s.ms for s in self.samples]

    @property
    def accepted_events(self) -> int:
        return len({s.event_id for s in self.samples if s.ok})

    def absorb(self, part: PhaseResult, offset_s: float) -> None:
        """Add one segment's results to this phase, its sample times moved onto the run's clock."""
        for sample in part.samples:
            sample.t += offset_s
        self.samples += part.samples
        self.skipped += part.skipped
        self.wall_s += part.wall_s
        self.lag_s = max(self.lag_s, part.lag_s)
        self.spends.absorb(part.spends, offset_s)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        sent = len(self.first_tries)
        return {
            "phase": self.name,
            "target_rate": self.rate,
            "duration_s": self.duration,
            "deliveries": sent,
            "requests": len(self.samples),
            "retries": len(self.samples) - sent,
            "errors": self.errors,
            "skipped": self.skipped,
            "achieved_rate": round(sent / self.wall_s, 1) if self.wall_s > 0 else float(sent),
            "sender_max_lag_ms": round(self.lag_s * 1000, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p95_ms": round(percentile(lat, 95), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else float("nan"),
            "outcomes": dict(Counter(s.outcome for s in self.samples)),
            "spends": self.spends.summary(),
        }
