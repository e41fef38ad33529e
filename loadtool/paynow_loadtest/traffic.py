"""The traffic model, one for the tests and the load tool: PayNow's deliveries and the app's spends,
planned up front on an open-loop schedule (each item on its own due time).

- `Mix`: the shares of each kind of delivery. The load tool's default: 10% exact duplicate
  deliveries (the same bytes re-sent), refunds of earlier orders, subscription activations and
  renewals, ignored types, bursts of orders for one user, a few unknown products (they must
  end in the DLQ), and the app's spends (`spend_share` per delivery). The chaos tests use a
  plainer mix (no bursts nor subscriptions, an exact number of unknown products).
- `plan_traffic`: the deliveries of one phase, `rate` per second for `duration` seconds; a
  refund or renewal needs its origin accepted first (`Delivery.needs`) and goes out at least
  `dependency_delay_s` after it.
- `plan_spends`: the app's spends among them, each on a user whose order or subscription was
  sent at least `delay_s` before, mostly small, sometimes more than a wallet holds.
- `new_traffic`: a seeded `EventFactory`, the users and the random source of one run.
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from paynow_loadtest.events import EventFactory, PlannedEvent
from paynow_service.domain.catalog import Catalog

CREDITING = ("order", "burst", "subscription", "renewal")  # delivery labels that credit a wallet
SMALL_COSTS = (10, 25, 50, 100, 150, 250, 400)
LARGE_COSTS = (1500, 3000, 6000)  # more than most wallets hold early on: refused, mostly
LARGE_SHARE = 0.1


@dataclass
class Delivery:
    due: float  # seconds after the phase starts
    planned: PlannedEvent
    duplicate: bool = False
    needs: str = ""  # event id that must have been accepted first (refund -> order, renewal -> activation)
    label: str = ""  # order, burst, refund, subscription, renewal, ignored, unknown_product, duplicate


@dataclass(frozen=True)
class Spend:
    due: float  # seconds after the phase starts, as a delivery's
    uid: str
    cost: int
    action_id: str
    needs: str  # the order or subscription event that credited the user: it must have been accepted
    label: str = "spend"


@dataclass(frozen=True)
class Mix:
    duplicates: float = 0.10
    refunds: float = 0.05
    subscriptions: float = 0.04
    renewals: float = 0.03
    ignored: float = 0.09
    unknown: float = 0.005  # at least `min_unknown` per phase
    min_unknown: int = 3
    unknown_count: int | None = None  # exactly this many unknown products per phase instead
    burst_every_s: float = 5.0
    burst_len: int = 15  # 0: no bursts
    dependency_delay_s: float = 2.0  # a refund or renewal goes out at least this long after its origin
    spend_share: float = 0.15  # the app's spends per delivery
    spend_delay_s: float = 1.0  # a spend goes out at least this long after the user's order or subscription


def user_ids(run: str, tag: str, count: int) -> list[str]:
    """`count` user ids of one run: `{run}-{tag}{i}`."""
    return [f"{run}-{tag}{i}" for i in range(count)]


def new_traffic(
    catalog: Catalog, *, seed: int | None = None, users: int = 12, run: str | None = None
) -> tuple[EventFactory, list[str], random.Random]:
    """A factory on the catalog and `users` fresh user ids, sharing one random source (seeded)."""
    rng = random.Random(seed)
    run = run or f"traffic-{uuid.uuid4().hex[:8]}"
    return EventFactory(catalog, rng=rng), user_ids(run, "u", users), rng


def _unknown_slots(total: int, mix: Mix) -> set[int]:
    if mix.unknown_count is not None:
        count = mix.unknown_count
    elif total >= 10 * mix.min_unknown:
        count = max(mix.min_unknown, round(total * mix.unknown))
    else:
        count = 1
    return {int(total * (k + 0.5) / count) for k in range(count)}


@dataclass
class _Planner:
    """The planner's memory: what went out, what can still be refunded or renewed."""

    factory: EventFactory
    users: Sequence[str]
    rng: random.Random
    mix: Mix
    rate: float
    originals: list[Delivery] = field(default_factory=list)
    refundable: list[Delivery] = field(default_factory=list)
    renewable: list[Delivery] = field(default_factory=list)

    def draw(self, t: float) -> Delivery:
        """A delivery at `t` outside bursts: a duplicate, a refund, a subscription, a renewal, an ignored
        type or an order, by the mix's shares (falling through when there is nothing to repeat or undo)."""
        mix, rng, factory = self.mix, self.rng, self.factory
        r = rng.random()
        edges = [mix.duplicates, mix.refunds, mix.subscriptions, mix.renewals, mix.ignored]
        # A kind is drawn below its cut, and only with a share of its own: a draw with nothing to repeat
        # or undo falls through to the next kind drawn, never to a kind the mix leaves out.
        cut = [sum(edges[: k + 1]) if edges[k] > 0 else -1.0 for k in range(len(edges))]
        ready = t - mix.dependency_delay_s
        refund_pool = [d for d in self.refundable if d.due <= ready]
        renew_pool = [d for d in self.renewable if d.due <= ready]
        recent = [d for d in self.originals[-int(self.rate * 5) - 1 :] if d.due <= t]
        if r < cut[0] and recent:
            original = rng.choice(recent)
            return Delivery(t, original.planned, duplicate=True, needs=original.needs, label="duplicate")
        if r < cut[1] and refund_pool:
            order = rng.choice(refund_pool)
            self.refundable.remove(order)
            return Delivery(t, factory.refund(order.planned), needs=order.planned.event_id, label="refund")
        if r < cut[2] and factory.plans:
            return Delivery(t, factory.subscription(rng.choice(self.users)), label="subscription")
        if r < cut[3] and renew_pool and factory.plans:
            origin = rng.choice(renew_pool)
            self.renewable.remove(origin)
            renewal = factory.subscription("", renew_of=origin.planned)
            return Delivery(t, renewal, needs=origin.planned.event_id, label="renewal")
        if r < cut[4]:
            return Delivery(t, factory.ignored(rng.choice(self.users)), label="ignored")
        return Delivery(t, factory.order(rng.choice(self.users)), label="order")

    def record(self, delivery: Delivery) -> None:
        if delivery.duplicate:
            return
        self.originals.append(delivery)
        if delivery.label in ("order", "burst") and delivery.planned.credit_points:
            self.refundable.append(delivery)
        if delivery.label in ("subscription", "renewal"):
            self.renewable.append(delivery)


def plan_traffic(
    factory: EventFactory, *, rate: float, duration: float, users: Sequence[str], rng: random.Random,
    mix: Mix,
) -> list[Delivery]:  # fmt: skip
    """The deliveries of one phase, `rate` per second for `duration` seconds, all planned up front."""
    total = max(1, round(rate * duration))
    unknown_at = _unknown_slots(total, mix)
    burst_every = max(mix.burst_len * 2, round(rate * mix.burst_every_s), 1)
    planner = _Planner(factory, users, rng, mix, rate)
    deliveries: list[Delivery] = []
    hot = users[0]
    for i in range(total):
        t = i / rate
        if mix.burst_len and i % burst_every == burst_every // 2:
            hot = rng.choice(users)
        in_burst = (
            mix.burst_len > 0 and burst_every // 2 <= i % burst_every < burst_every // 2 + mix.burst_len
        )
        if i in unknown_at:
            delivery = Delivery(t, factory.unknown_product(rng.choice(users)), label="unknown_product")
        elif in_burst:
            delivery = Delivery(t, factory.order(hot), label="burst")
        else:
            delivery = planner.draw(t)
        planner.record(delivery)
        deliveries.append(delivery)
    return deliveries


def plan_spends(
    deliveries: Sequence[Delivery], *, share: float, rng: random.Random, delay_s: float = 1.0,
    recent_s: float = 10.0,
) -> list[Spend]:  # fmt: skip
    """`floor(share * len(deliveries))` spends (fewer only when no user had credit early enough), one at
    most after each delivery, at the midpoint to the next one (spread between the deliveries, not on
    them), on a user who bought at least `delay_s` before (preferring the last `recent_s`); by due time.
    Deterministic for a seed; each with a unique action id."""
    if share <= 0 or not deliveries:
        return []
    origins = [
        d for d in deliveries
        if not d.duplicate and d.label in CREDITING and d.planned.expected.uid
        and sum(d.planned.expected.entries.values()) > 0
    ]  # fmt: skip
    origin_dues = [d.due for d in origins]
    spends: list[Spend] = []
    for i, delivery in enumerate(deliveries):
        if len(spends) >= math.floor((i + 1) * share + 1e-9):
            continue
        if i + 1 < len(deliveries):
            at = (delivery.due + deliveries[i + 1].due) / 2
        else:  # the last one: half the last gap after it
            at = delivery.due + (delivery.due - deliveries[i - 1].due) / 2 if i else delivery.due
        ready = bisect.bisect_right(origin_dues, at - delay_s)
        if not ready:
            continue  # nobody has bought anything yet: the spend waits for the next delivery
        recent = bisect.bisect_left(origin_dues, at - recent_s, 0, ready)
        origin = origins[rng.randrange(recent if recent < ready else 0, ready)]
        costs = LARGE_COSTS if rng.random() < LARGE_SHARE else SMALL_COSTS
        cost = rng.choice(costs)
        action_id = f"load-spend-{rng.getrandbits(64):016x}"
        spends.append(Spend(at, origin.planned.expected.uid, cost, action_id, origin.planned.event_id))
    return spends


def plan_phase(
    factory: EventFactory, *, rate: float, duration: float, users: Sequence[str], rng: random.Random, mix: Mix
) -> tuple[list[Delivery], list[Spend]]:
    """A phase's deliveries and the app's spends among them."""
    deliveries = plan_traffic(factory, rate=rate, duration=duration, users=users, rng=rng, mix=mix)
    spends = plan_spends(deliveries, share=mix.spend_share, rng=rng, delay_s=mix.spend_delay_s)
    return deliveries, spends
