"""`--find-max`: raise the rate step by step (bounded in steps and time), for the service and for the
floor, each until its answer p95 passes 50 ms or it answers an error. Between steps the queue drains
(bounded). A step's floor sends the same deliveries (to its own collection and topic, nobody consumes
them: the worker could not follow the floor's maximum) and spends of its own, planned alike on the same
users: from the wallets the service's step credited (or from none, refused, once the service stopped).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from paynow_loadtest.floor import FloorTarget
from paynow_loadtest.phases import Run
from paynow_loadtest.results import TARGET_P95_MS, PhaseResult, ratio
from paynow_loadtest.state import wait_drained
from paynow_loadtest.traffic import Delivery, Spend, plan_spends, user_ids


def sustained(summary: dict[str, Any]) -> bool:
    """A find-max step holds: answer p95 within the ceiling and not one error answer."""
    return bool(summary["p95_ms"] <= TARGET_P95_MS and summary["errors"] == 0)


@dataclass
class _Climb:
    service_ok: bool = True
    floor_ok: bool = True
    service_max: float = 0.0
    floor_max: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    phases: list[tuple[PhaseResult | None, PhaseResult | None, bool]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    spends: list[Spend] = field(default_factory=list)


def _service_step(run: Run, climb: _Climb, step: dict[str, Any], index: int, rate: float,
                  deliveries: list[Delivery], spends: list[Spend]) -> tuple[PhaseResult, bool]:  # fmt: skip
    print(f"find-max step {index + 1}: service at {rate:g}/s ...", file=sys.stderr, flush=True)
    service = run.service(f"service {rate:g}/s", rate, run.args.step_duration, deliveries, spends)
    climb.spends += spends
    step["service"] = service.summary()
    t0 = time.monotonic()
    wait_s = min(90.0, run.args.drain_timeout)
    drained, pending = wait_drained(run.stack.project, run.expectation, timeout_s=wait_s)
    step["drain_s"] = round(time.monotonic() - t0, 1) if drained else f">{wait_s:g} ({len(pending)} left)"
    held = step["service"]["sustained"] = sustained(step["service"])
    if held:
        climb.service_max = round(rate, 1)
    else:
        climb.service_ok = False
    return service, held


def _floor_step(run: Run, climb: _Climb, step: dict[str, Any], index: int, rate: float,
                deliveries: list[Delivery], spends: list[Spend],
                target: FloorTarget) -> PhaseResult:  # fmt: skip
    print(f"find-max step {index + 1}: floor at {rate:g}/s ...", file=sys.stderr, flush=True)
    floor = run.floor(f"floor {rate:g}/s", rate, run.args.step_duration, deliveries, spends, target)
    climb.spends += spends
    step["floor"] = floor.summary()
    if sustained(step["floor"]):
        step["floor"]["sustained"] = True
        climb.floor_max = round(rate, 1)
    else:
        step["floor"]["sustained"] = False
        climb.floor_ok = False
    return floor


def _step(run: Run, climb: _Climb, index: int, rate: float, target: FloorTarget) -> None:
    args = run.args
    users = user_ids(f"load-{run.run_id}-s{index}", "u", max(20, round(rate * args.step_duration / 6)))
    deliveries, spends = run.plan(args.step_duration, users, rate)
    floor_spends = plan_spends(deliveries, share=args.spend_share, rng=run.rng, delay_s=run.mix.spend_delay_s)
    climb.deliveries += deliveries
    step: dict[str, Any] = {"rate": round(rate, 1)}
    service = floor = None
    held = False
    if climb.service_ok:
        service, held = _service_step(run, climb, step, index, rate, deliveries, spends)
    if climb.floor_ok:
        floor = _floor_step(run, climb, step, index, rate, deliveries, floor_spends, target)
    climb.steps.append(step)
    climb.phases.append((service, floor, held))


def find_max(
    run: Run, target: FloorTarget
) -> tuple[PhaseResult, PhaseResult | None, dict[str, Any], list[Delivery], list[Spend]]:
    """Returns the highest sustained service step (else the first), its floor step, the summary, every
    delivery and every spend."""
    args = run.args
    began = time.monotonic()
    climb = _Climb()
    rate = args.rate
    for index in range(args.max_steps):
        if not (climb.service_ok or climb.floor_ok) or time.monotonic() - began > args.max_time:
            break
        _step(run, climb, index, rate, target)
        rate *= args.step_factor
    held = [p for p in climb.phases if p[2]]
    service, floor, _ = held[-1] if held else climb.phases[0]
    summary = {
        "service_max": climb.service_max,
        "floor_max": climb.floor_max,
        "ratio": ratio(climb.service_max, climb.floor_max),
        "capped": climb.service_ok or climb.floor_ok,
        "criterion": f"answer p95 <= {TARGET_P95_MS:g} ms and no error answer",
        "step_duration_s": args.step_duration,
        "steps": climb.steps,
    }
    assert service is not None
    return service, floor, summary, climb.deliveries, climb.spends
