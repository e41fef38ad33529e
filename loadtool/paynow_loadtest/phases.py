"""The phases of a run: a warm-up, the service and the floor in turns (or find-max's steps), then the
drain and the invariants.

- `warm_up`: real traffic (the app's spends included) through the whole pipeline, then the floor, a
  drain, and one more unmeasured turn of each; its events count in the invariants.
- `interleaved`: the service and the floor take turns in --rounds short segments, counterbalanced,
  so both meet the same machine; each turn carries its share of the app's spends.
- `find_max`: raise the rate step by step until answer p95 passes 50 ms or an error answer.
- `verify`: wait for the queue to drain (bounded), settle the unknown spends, pull the DLQ, check.

Every turn of the sender or the floor goes through `Run.cpu` (`cpu.CpuMeter`): with --pin this process
moves to the sender's CPU or the floor's for it, and once `Run.measuring` (after the warm-up) each
process's CPU is sampled at the turn's start and end.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from paynow_loadtest.cpu import FLOOR, SENDER, CpuMeter
from paynow_loadtest.driver import WebhookSender, run_async
from paynow_loadtest.events import EventFactory
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.floor import FloorTarget, run_floor
from paynow_loadtest.invariants import InvariantReport, check
from paynow_loadtest.results import PhaseResult
from paynow_loadtest.spends import SpendBook
from paynow_loadtest.stack import Stack
from paynow_loadtest.state import pull_dead_letters, read_state, wait_drained
from paynow_loadtest.traffic import Delivery, Mix, Spend, plan_phase


class _Timed(Protocol):
    @property
    def due(self) -> float: ...


Timed = TypeVar("Timed", bound=_Timed)  # a Delivery or a Spend


@dataclass
class Run:
    """One run of the tool: its options, the stack, the traffic's source and the sender."""

    args: argparse.Namespace
    stack: Stack
    factory: EventFactory
    rng: random.Random
    sender: WebhookSender
    book: SpendBook
    run_id: str
    users: list[str]
    floor_users: list[str]
    pipeline_floor: FloorTarget  # the service's own collection and topic
    # Every turn's CPU per process (once measuring) and, with --pin, its placement.
    cpu: CpuMeter = dataclasses.field(default_factory=lambda: CpuMeter({}, {}))
    measuring: bool = False  # set after the warm-up

    @property
    def expectation(self) -> Expectation:
        return self.sender.expectation

    @property
    def mix(self) -> Mix:
        return Mix(spend_share=self.args.spend_share)

    def plan(
        self, duration: float, users: Sequence[str], rate: float | None = None
    ) -> tuple[list[Delivery], list[Spend]]:
        rate = self.args.rate if rate is None else rate
        return plan_phase(self.factory, rate=rate, duration=duration, users=users, rng=self.rng, mix=self.mix)

    def service(
        self, name: str, rate: float, duration: float, deliveries: Sequence[Delivery], spends: Sequence[Spend]
    ) -> PhaseResult:
        with self.cpu.turn(name, SENDER, measured=self.measuring) as turn:
            phase = run_async(self.sender.run(name, rate, duration, deliveries, spends))
            turn.record(phase.latencies())
        return phase

    def floor(
        self, name: str, rate: float, duration: float, deliveries: Sequence[Delivery],
        spends: Sequence[Spend], target: FloorTarget | None = None,
    ) -> PhaseResult:  # fmt: skip
        target = target or self.pipeline_floor
        with self.cpu.turn(name, FLOOR, measured=self.measuring) as turn:
            phase = run_async(
                run_floor(self.stack.project, target, name, rate, duration, deliveries, spends, self.book)
            )
            turn.record(phase.latencies())
        return phase


def warm_up(run: Run) -> dict[str, Any]:
    """Real traffic (the app's spends included) through the whole pipeline, then through the floor, before
    measuring: the emulators' JVMs compile their hot paths and every client opens its channels. Its events
    and spends count in the invariants; its latencies are reported apart."""
    args = run.args
    rate, warm_s, floor_s = args.rate, args.warmup, min(args.warmup, 5.0)
    phase = run.service("warm-up", rate, warm_s, *run.plan(warm_s, run.users))
    floor = run.floor("floor warm-up", rate, floor_s, *run.plan(floor_s, run.floor_users))
    wait_drained(run.stack.project, run.expectation, timeout_s=60)
    # One more unmeasured turn of each after the drain: measured, the first seconds after it were slow
    # (p95 up to 96 ms for about 8 s, both emulators catching up with the drain's burst of reads), and
    # they fell on whichever turn came first.
    service_settle = run.service("settle", rate, floor_s, *run.plan(floor_s, run.users))
    floor_settle = run.floor("floor settle", rate, floor_s, *run.plan(floor_s, run.floor_users))
    return {
        "service": phase.summary(),
        "floor": floor.summary(),
        "service after the drain": service_settle.summary(),
        "floor after the drain": floor_settle.summary(),
    }


def slices(items: Sequence[Timed], total_s: float, rounds: int) -> list[list[Timed]]:
    """A phase's planned deliveries (or spends) cut into `rounds` consecutive segments, each re-timed
    from 0."""
    size = total_s / rounds
    parts: list[list[Timed]] = [[] for _ in range(rounds)]
    for item in items:
        k = min(rounds - 1, int(item.due // size))
        parts[k].append(dataclasses.replace(item, due=item.due - k * size))  # type: ignore[type-var]
    return parts


def interleaved(
    run: Run, service_plan: Sequence[Delivery], floor_plan: Sequence[Delivery],
    service_spends: Sequence[Spend] = (), floor_spends: Sequence[Spend] = (),
) -> tuple[PhaseResult, PhaseResult | None]:  # fmt: skip
    """The service and the floor take turns in short segments, so both meet the same machine: the same
    emulator warmth, the same neighbours, the worker processing both one's and the other's events. Each
    turn carries its share of the app's spends."""
    args = run.args
    rounds = max(1, min(args.rounds, int(args.duration)))
    service = PhaseResult("service", args.rate, args.duration)
    floor = PhaseResult("floor", args.rate, args.floor_duration) if floor_plan else None
    service_parts = zip(
        slices(service_plan, args.duration, rounds),
        slices(service_spends, args.duration, rounds),
        strict=True,
    )
    floor_parts = zip(
        slices(floor_plan, args.floor_duration or 1, rounds),
        slices(floor_spends, args.floor_duration or 1, rounds),
        strict=True,
    )
    service_s, floor_s = args.duration / rounds, args.floor_duration / rounds
    began = time.perf_counter()
    for k, (service_part, floor_part) in enumerate(zip(service_parts, floor_parts, strict=True)):
        # Counterbalanced (service, floor), (floor, service), ...: the machine drifts during a run (the
        # emulators' JVMs are still warming), and whoever always went first would always meet it worse.
        for turn in ("service", "floor") if k % 2 == 0 else ("floor", "service"):
            offset = time.perf_counter() - began
            if turn == "service":
                service.absorb(run.service("service", args.rate, service_s, *service_part), offset)
            elif floor is not None:
                floor.absorb(run.floor("floor", args.rate, floor_s, *floor_part), offset)
    return service, floor


@dataclass
class Verification:
    drained: bool
    drain_s: float
    pending: dict[str, str]
    report: InvariantReport
    records: dict[str, dict[str, Any]]


def verify(
    stack: Stack,
    expectation: Expectation,
    book: SpendBook,
    *,
    drain_timeout_s: float,
    strict_dlq: bool = True,
) -> Verification:
    """Wait for the queue to drain (bounded), settle the unknown spends, pull the DLQ, check them all."""
    began = time.monotonic()
    drained, pending = wait_drained(stack.project, expectation, timeout_s=drain_timeout_s)
    drain_s = time.monotonic() - began
    book.resolve()  # the spends whose outcome the app's code did not tell: their ledger entry says
    bad = {e.event_id for e in expectation.events.values() if e.status == "failed_terminal"}
    accepted_bad = sum(1 for e in bad if expectation.is_accepted(e))
    letters = pull_dead_letters(
        stack.settings.subscription_path(stack.settings.pubsub_dlq_subscription),
        set(expectation.events),
        want=accepted_bad,
        wait_s=20,
    )
    state = read_state(stack.project, expectation)
    report = check(expectation, state, letters, dlq_duplicates_ok=not strict_dlq)
    return Verification(drained, drain_s, pending, report, state.records)
