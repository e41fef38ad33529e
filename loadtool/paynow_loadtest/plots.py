"""The report's plot: answer latency per second of the run (p50, p95, p99 of the service's answers,
the floor's p95, the 50 ms ceiling), a PNG drawn by matplotlib on its Agg backend (no display, no
pyplot state: each figure is its own)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from paynow_loadtest.results import TARGET_P95_MS, PhaseResult, Sample, percentile

GAP_S = 1.5  # no line across a gap this long (the other phase's turn)


def per_second(samples: Sequence[Sample], q: float) -> list[tuple[float, float]]:
    """(middle of the second, the q-th percentile of the answers started in it), by time."""
    buckets: dict[int, list[float]] = {}
    for s in samples:
        buckets.setdefault(int(s.t), []).append(s.ms)
    return [(k + 0.5, percentile(v, q)) for k, v in sorted(buckets.items())]


def _broken(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """x and y lists with a NaN wherever two points are more than GAP_S apart, so no line joins them."""
    xs: list[float] = []
    ys: list[float] = []
    for x, y in points:
        if xs and x - xs[-1] > GAP_S:
            xs.append(x - GAP_S / 2)
            ys.append(math.nan)
        xs.append(x)
        ys.append(y)
    return xs, ys


def latency_figure(service: PhaseResult, floor: PhaseResult | None, title: str) -> Figure:
    figure = Figure(figsize=(10, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    series = [
        ("service p50", per_second(service.samples, 50), "tab:blue"),
        ("service p95", per_second(service.samples, 95), "tab:orange"),
        ("service p99", per_second(service.samples, 99), "tab:red"),
    ]
    if floor is not None and floor.samples:
        series.append(("floor p95", per_second(floor.samples, 95), "tab:green"))
    for name, points, color in series:
        xs, ys = _broken(points)
        axes.plot(xs, ys, label=name, color=color, linewidth=1.4)
    axes.axhline(
        TARGET_P95_MS, color="grey", linestyle="--", linewidth=1, label=f"{TARGET_P95_MS:g} ms p95 target"
    )
    peak = max([y for _, points, _ in series for _, y in points if not math.isnan(y)], default=0.0)
    axes.set_ylim(0, max(TARGET_P95_MS * 1.2, peak * 1.05))
    axes.set_xlim(left=0)
    axes.set_xlabel("time in the run (s)")
    axes.set_ylabel("answer latency (ms)")
    axes.set_title(title)
    axes.grid(True, color="0.88")
    axes.legend(loc="upper left", ncols=len(series) + 1, fontsize="small")
    return figure


def write_plots(stem: Path, service: PhaseResult, floor: PhaseResult | None, title: str) -> list[Path]:
    """`{stem}.png`, the answer latency over time; the files written."""
    png = stem.with_name(stem.name + ".png")
    latency_figure(service, floor, title).savefig(png, format="png")
    return [png]
