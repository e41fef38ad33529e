"""What a run of events must leave in Firestore and the DLQ, and one checker for it.

Shared by the chaos tests and the load tool (`bench/load.py`):

- `EventFactory` builds realistic PayNow events (`build_event`) together with what each
  must do: its final `webhookEvents` status, the ledger entries it writes (ids and signed
  amounts, SPEC 5), or its dead-letter reason.
- `Expectation` collects them and which were accepted (answered 2xx at least once).
- `wait_drained` polls Firestore until every accepted event reached a final status.
- `read_state` reads the records, wallets and ledgers; `pull_dead_letters` drains the DLQ
  subscription (acking only this run's messages).
- `check` compares: every accepted event processed exactly once with exactly its entries;
  each wallet equal to the sum of its ledger and to the expected sum; each ledger a
  serial chain (pre/post) from zero to the balance; no entry without its processed event;
  the DLQ holding exactly the bad events, with their reason, and nothing else.

An event that was never accepted (every delivery failed) may have been processed or not:
if its record says processed it must have exactly its entries (and counts in the wallet),
otherwise it must have none.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore
from google.cloud.pubsub_v1 import SubscriberClient

from paynow_service.domain.catalog import Catalog
from paynow_service.domain.events import HANDLED_TYPES
from paynow_service.domain.ledger import order_line_entry_id, reversal_entry_id, subscription_entry_id
from paynow_service.entrypoints.test_webhook import EVENT_TYPES, build_event, flake_id
from tests.support.wallet_audit import audit_wallet

# "parked": a refund or dispute ahead of its order, stored on it (processed once the order comes).
FINAL_STATUSES = frozenset({"processed", "ignored", "failed_terminal", "dead_lettered", "parked"})
IGNORED_TYPES = tuple(t for t in EVENT_TYPES if t not in HANDLED_TYPES)
UNKNOWN_PRODUCT = "400000000000000001"  # in no catalog
_EXAMPLES = 5


# ---- the expected model ---------------------------------------------------------------------


@dataclass
class Expected:
    """What one event must do."""

    event_id: str
    kind: str  # order, unknown_product, refund, subscription, ignored ...
    uid: str  # whose wallet it touches ("" when none)
    status: str  # processed, ignored, failed_terminal
    entries: dict[str, int] = field(default_factory=dict)  # entry id -> signed amount
    reason: str = ""  # failureReason and DLQ reason of a failed_terminal event
    accepted: bool = False


@dataclass
class PlannedEvent:
    """One event: its payload (sent as is, byte for byte, by every delivery) and its effect."""

    event: dict[str, Any]
    body: bytes
    expected: Expected
    order_id: str = ""
    credit_entry: str = ""  # an order's credited entry (refunds reverse it)
    credit_points: int = 0
    product_id: str = ""
    quantity: int = 1
    price: int = 0
    subscription_id: str = ""
    cycle: int = 0

    @property
    def event_id(self) -> str:
        return self.expected.event_id


class EventFactory:
    """Realistic events with their expected effects, from the catalog the service uses."""

    def __init__(self, catalog: Catalog, *, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.products = sorted(catalog.products.items())
        self.plans = sorted(catalog.subscriptions.items())
        if not self.products:
            raise ValueError("the catalog maps no product: nothing to credit")
        if UNKNOWN_PRODUCT in catalog.products:
            raise ValueError(f"the catalog maps {UNKNOWN_PRODUCT}, the load's unknown product")

    @staticmethod
    def _encode(event: dict[str, Any]) -> bytes:
        return json.dumps(event, separators=(",", ":")).encode()

    def order(self, uid: str, *, quantity: int | None = None, product_id: str | None = None) -> PlannedEvent:
        if product_id is None:
            product_id, rule = self.rng.choice(self.products)
        else:
            rule = dict(self.products)[product_id]
        quantity = quantity or self.rng.choice((1, 1, 1, 2, 3))
        price = self.rng.choice((199, 499, 999, 1999))
        event = build_event(
            "ON_ORDER_COMPLETED", uid=uid, product_id=product_id, quantity=quantity, price=price
        )
        body = event["body"]
        entry = order_line_entry_id(body["id"], body["lines"][0]["id"])
        points = rule.points * quantity
        expected = Expected(
            event["event_id"], "order", uid, "processed", {entry: points} if points > 0 else {}
        )
        return PlannedEvent(
            event, self._encode(event), expected, order_id=body["id"], credit_entry=entry,
            credit_points=points, product_id=product_id, quantity=quantity, price=price,
        )  # fmt: skip

    def unknown_product(self, uid: str) -> PlannedEvent:
        event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=UNKNOWN_PRODUCT)
        expected = Expected(
            event["event_id"], "unknown_product", uid, "failed_terminal", reason="unknown_product"
        )
        return PlannedEvent(event, self._encode(event), expected, order_id=event["body"]["id"])

    def refund(self, order: PlannedEvent) -> PlannedEvent:
        """ON_REFUND `completed` of an earlier order: reverses its credit once."""
        event = build_event(
            "ON_REFUND", uid=order.expected.uid, product_id=order.product_id, order_id=order.order_id,
            quantity=order.quantity, price=order.price, status="completed",
        )  # fmt: skip
        entries = {reversal_entry_id(order.credit_entry): -order.credit_points} if order.credit_points else {}
        expected = Expected(event["event_id"], "refund", order.expected.uid, "processed", entries)
        return PlannedEvent(event, self._encode(event), expected, order_id=order.order_id)

    def subscription(self, uid: str, *, renew_of: PlannedEvent | None = None) -> PlannedEvent:
        """ON_SUBSCRIPTION_ACTIVATED (cycle 1), or ON_SUBSCRIPTION_RENEWED (next cycle) of `renew_of`."""
        if not self.plans:
            raise ValueError("the catalog has no subscription plan")
        if renew_of is not None:
            plan_id, sub_id, cycle, kind = (
                renew_of.product_id, renew_of.subscription_id, renew_of.cycle + 1, "ON_SUBSCRIPTION_RENEWED",
            )  # fmt: skip
            uid = renew_of.expected.uid
        else:
            plan_id, sub_id, cycle, kind = (
                self.rng.choice(self.plans)[0],
                flake_id(),
                1,
                "ON_SUBSCRIPTION_ACTIVATED",
            )
        rule = dict(self.plans)[plan_id]
        event = build_event(
            kind, uid=uid, product_id=plan_id, subscription_id=sub_id, billing_cycle_sequence=cycle
        )
        entries = (
            {subscription_entry_id(sub_id, cycle): rule.points_per_cycle} if rule.points_per_cycle else {}
        )
        expected = Expected(event["event_id"], "subscription", uid, "processed", entries)
        return PlannedEvent(
            event, self._encode(event), expected, product_id=plan_id, subscription_id=sub_id, cycle=cycle
        )

    def ignored(self, uid: str, event_type: str | None = None) -> PlannedEvent:
        event_type = event_type or self.rng.choice(IGNORED_TYPES)
        product_id = self.rng.choice(self.products)[0]
        event = build_event(event_type, uid=uid, product_id=product_id)
        expected = Expected(event["event_id"], "ignored", uid, "ignored")
        return PlannedEvent(event, self._encode(event), expected)


@dataclass
class ExpectedSpend:
    """A spend by the app (its spend code, run beside the service): `spent` once it succeeded."""

    action_id: str
    uid: str
    cost: int
    spent: bool = False


class Expectation:
    """Every event of a run, by id, and which were accepted; the app's spends beside them."""

    def __init__(self) -> None:
        self.events: dict[str, Expected] = {}
        self.spends: dict[str, ExpectedSpend] = {}
        self.other_writes: dict[str, tuple[str, int]] = {}  # entry id -> (uid, signed amount)

    def write(self, entry_id: str, uid: str, amount: int) -> None:
        """An entry written by no event: a PointsService credit or reversal, the app's own credit."""
        self.other_writes[entry_id] = (uid, amount)

    def spend(self, action_id: str, uid: str, cost: int, *, spent: bool) -> None:
        self.spends[action_id] = ExpectedSpend(action_id, uid, cost, spent)

    def add(self, planned: PlannedEvent | Expected) -> None:
        expected = planned.expected if isinstance(planned, PlannedEvent) else planned
        self.events.setdefault(expected.event_id, expected)

    def admit(self, planned: PlannedEvent, *, needs: str = "", duplicate: bool = False) -> bool:
        """Whether a delivery may go out now, as PayNow would send it (a refund or renewal only after its
        origin was accepted, a re-delivery only of an event already sent); recorded when it may."""
        if needs and not self.is_accepted(needs):
            return False
        if duplicate and planned.event_id not in self.events:
            return False
        self.add(planned)
        return True

    def accept(self, event_id: str) -> None:
        self.events[event_id].accepted = True

    def is_accepted(self, event_id: str) -> bool:
        event = self.events.get(event_id)
        return bool(event and event.accepted)

    @property
    def accepted(self) -> list[Expected]:
        return [e for e in self.events.values() if e.accepted]

    @property
    def uids(self) -> list[str]:
        users = {e.uid for e in self.events.values() if e.uid} | {s.uid for s in self.spends.values()}
        return sorted(users | {uid for uid, _ in self.other_writes.values()})


# ---- reading Firestore and the DLQ ---------------------------------------------------------------


@dataclass
class DeadLetter:
    event_id: str
    reason: str
    error_class: str
    message_id: str


@dataclass
class State:
    records: dict[str, dict[str, Any]]  # event id -> webhookEvents document
    wallets: dict[str, dict[str, Any]]  # uid -> wallet document (absent: no wallet)
    ledgers: dict[str, dict[str, dict[str, Any]]]  # uid -> entry id -> entry


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_records(client: firestore.Client, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    refs = [client.collection("webhookEvents").document(e) for e in event_ids]
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(refs, 300):
        for snap in client.get_all(chunk, timeout=30):
            if snap.exists:
                found[snap.id] = snap.to_dict() or {}
    return found


def read_state(project: str, expectation: Expectation, *, threads: int = 8) -> State:
    client = firestore.Client(project=project)
    try:
        records = read_records(client, expectation.events)
        uids = expectation.uids
        wallet_refs = [client.document("users", uid, "wallet", "points") for uid in uids]
        wallets: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(wallet_refs, 300):
            for snap in client.get_all(chunk, timeout=30):
                if snap.exists:
                    wallets[snap.reference.parent.parent.id] = snap.to_dict() or {}

        def ledger(uid: str) -> tuple[str, dict[str, dict[str, Any]]]:
            entries = client.collection("users", uid, "ledger").stream(timeout=30)
            return uid, {s.id: s.to_dict() or {} for s in entries}

        with ThreadPoolExecutor(threads) as pool:
            ledgers = dict(pool.map(ledger, uids))
        return State(records=records, wallets=wallets, ledgers=ledgers)
    finally:
        client.close()


def wait_drained(
    project: str, expectation: Expectation, *, timeout_s: float, poll_s: float = 1.0
) -> tuple[bool, dict[str, str]]:
    """Wait (bounded) until every accepted event has a final status; return (drained, {pending: status})."""
    client = firestore.Client(project=project)
    pending = {e.event_id for e in expectation.accepted}
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            records = read_records(client, pending)
            statuses = {e: str(records.get(e, {}).get("status", "missing")) for e in pending}
            pending = {e for e, s in statuses.items() if s not in FINAL_STATUSES}
            if not pending or time.monotonic() >= deadline:
                return not pending, {e: statuses[e] for e in pending}
            time.sleep(poll_s)
    finally:
        client.close()


def pull_dead_letters(
    subscription_path: str, ours: set[str], *, want: int, wait_s: float, settle_s: float = 2.0
) -> list[DeadLetter]:
    """Pull the DLQ subscription: ack this run's messages, give others back (nack).

    Waits until `want` of ours arrived (at most `wait_s`), then keeps pulling for
    `settle_s` more so that an extra (doubled or unexpected) dead letter shows up too.
    """
    client = SubscriberClient()
    got: list[DeadLetter] = []
    deadline = time.monotonic() + wait_s
    settle_until: float | None = None
    try:
        while True:
            now = time.monotonic()
            if settle_until is None and (len(got) >= want or now >= deadline):
                settle_until = now + settle_s
            if settle_until is not None and now >= settle_until:
                return got
            response = client.pull(
                subscription=subscription_path, max_messages=500, timeout=5, return_immediately=False
            )
            mine, theirs = [], []
            for received in response.received_messages:
                attrs = dict(received.message.attributes)
                event_id = attrs.get("event_id") or attrs.get("CloudPubSubDeadLetterSourceMessageId", "")
                if event_id in ours:
                    mine.append(received.ack_id)
                    got.append(
                        DeadLetter(
                            event_id=event_id,
                            reason=attrs.get("reason", ""),
                            error_class=attrs.get("error_class", ""),
                            message_id=received.message.message_id,
                        )
                    )
                else:
                    theirs.append(received.ack_id)
            if mine:
                client.acknowledge(subscription=subscription_path, ack_ids=mine)
            if theirs:
                client.modify_ack_deadline(
                    subscription=subscription_path, ack_ids=theirs, ack_deadline_seconds=0
                )
            if not response.received_messages:
                time.sleep(0.2)
    finally:
        client.close()


# ---- the check ----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    description: str
    failures: list[str] = field(default_factory=list)
    count: int = 0  # items checked

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, detail: str) -> None:
        self.failures.append(detail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.count,
            "failures": len(self.failures),
            "examples": self.failures[:_EXAMPLES],
            "description": self.description,
        }


@dataclass
class InvariantReport:
    checks: dict[str, Check]
    events: int
    accepted: int
    not_accepted: int
    processed_once: int
    lost: list[str]
    doubled: list[str]
    dlq_expected: int
    dlq_received: int
    dlq_duplicates: int
    spends: int = 0  # the app's spends that succeeded
    spends_refused: int = 0  # refused (not enough points): nothing written
    points_spent: int = 0
    points_expired: int = 0  # promo the app's spends dropped as expired

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "accepted": self.accepted,
            "not_accepted": self.not_accepted,
            "processed_once": self.processed_once,
            "lost": len(self.lost),
            "lost_examples": self.lost[:_EXAMPLES],
            "doubled": len(self.doubled),
            "doubled_examples": self.doubled[:_EXAMPLES],
            "dlq_expected": self.dlq_expected,
            "dlq_received": self.dlq_received,
            "dlq_duplicates": self.dlq_duplicates,
            "spends": self.spends,
            "spends_refused": self.spends_refused,
            "points_spent": self.points_spent,
            "points_expired": self.points_expired,
            "checks": {name: c.to_dict() for name, c in self.checks.items()},
        }

    def summary(self) -> str:
        lines = [
            f"invariants: {'OK' if self.ok else 'FAILED'}  events {self.events}, accepted {self.accepted}, "
            f"processed exactly once {self.processed_once}, lost {len(self.lost)}, "
            f"doubled {len(self.doubled)}, DLQ {self.dlq_received}/{self.dlq_expected} "
            f"(duplicates {self.dlq_duplicates}), the app's spends {self.spends} "
            f"({self.points_spent} points; {self.spends_refused} refused, {self.points_expired} expired)"
        ]
        for check in self.checks.values():
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"  {mark} {check.name}: {check.description} ({check.count} checked)")
            lines.extend(f"         {f}" for f in check.failures[:_EXAMPLES])
        return "\n".join(lines)


def check(
    expectation: Expectation,
    state: State,
    dead_letters: list[DeadLetter],
    *,
    dlq_duplicates_ok: bool = False,
) -> InvariantReport:
    checks = {
        c.name: c
        for c in (
            Check("event_status", "every accepted event reached its final status exactly as expected"),
            Check("ledger_per_event", "each event wrote exactly its ledger entries (ids and amounts)"),
            Check("records_match_ledger", "each processed record lists exactly the entries written"),
            Check(
                "wallet_in_app_model",
                "each wallet, in the app's model: promoBalance = its lots, no negative lot, entries' "
                "post - pre add up to it per kind in one serial chain, every entry moves what it says",
            ),
            Check(
                "wallet_equals_expected",
                "each wallet = the events' credits - the app's spends - the promo they dropped as expired",
            ),
            Check("spends_exact", "each of the app's spends that succeeded wrote its debit, no other did"),
            Check(
                "no_orphan_entries", "every ledger entry belongs to a processed event or spend of this run"
            ),
            Check("dlq_exact", "every bad event is in the DLQ with its reason, and nothing else is"),
        )
    }
    by_event: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for uid, entries in state.ledgers.items():
        for entry_id, entry in entries.items():
            event_id = str((entry.get("metadata") or {}).get("eventId", ""))
            by_event[event_id][entry_id] = {**entry, "_uid": uid}

    lost: list[str] = []
    doubled: list[str] = []
    processed_once = 0
    counted: set[str] = set()  # events whose entries count in the expected wallets
    for event in expectation.events.values():
        record = state.records.get(event.event_id)
        status = str((record or {}).get("status", "missing"))
        written = by_event.get(event.event_id, {})
        if not event.accepted:
            if status in ("processed", "ignored", "failed_terminal") and status == event.status:
                counted.add(event.event_id)
            elif written:
                checks["ledger_per_event"].fail(
                    f"{event.event_id} ({event.kind}) was never accepted, yet wrote {sorted(written)}"
                )
                doubled.append(event.event_id)
            continue
        checks["event_status"].count += 1
        problem = ""
        if status != event.status:
            problem = f"status {status}, expected {event.status}"
        elif event.status == "failed_terminal" and (record or {}).get("failureReason") != event.reason:
            problem = f"failureReason {(record or {}).get('failureReason')!r}, expected {event.reason!r}"
        if problem:
            checks["event_status"].fail(f"{event.event_id} ({event.kind}): {problem}")
            lost.append(event.event_id)
            continue
        counted.add(event.event_id)
    for event_id in counted:
        event = expectation.events[event_id]
        checks["ledger_per_event"].count += 1
        written = by_event.get(event_id, {})
        got = {entry_id: int(e.get("amount", 0)) for entry_id, e in written.items()}
        if got != event.entries:
            missing = sorted(set(event.entries) - set(got))
            extra = sorted(set(got) - set(event.entries))
            wrong = sorted(k for k in set(got) & set(event.entries) if got[k] != event.entries[k])
            checks["ledger_per_event"].fail(
                f"{event_id} ({event.kind}): missing {missing}, extra {extra}, wrong amount {wrong}"
            )
            (doubled if extra else lost).append(event_id)
        elif any(e["_uid"] != event.uid for e in written.values()):
            checks["ledger_per_event"].fail(f"{event_id} ({event.kind}): entries in another user's ledger")
            lost.append(event_id)
        else:
            processed_once += 1
        record = state.records.get(event_id) or {}
        if record.get("status") == "processed":
            checks["records_match_ledger"].count += 1
            listed = sorted((record.get("result") or {}).get("entryIds") or [])
            if listed != sorted(event.entries):
                checks["records_match_ledger"].fail(
                    f"{event_id}: record lists {listed}, expected {sorted(event.entries)}"
                )

    expected_wallets: Counter[str] = Counter()
    for event_id in counted:
        event = expectation.events[event_id]
        expected_wallets[event.uid] += sum(event.entries.values())
    for uid, amount in expectation.other_writes.values():
        expected_wallets[uid] += amount
    spends = expectation.spends
    for spend in spends.values():
        checks["spends_exact"].count += 1
        entry = state.ledgers.get(spend.uid, {}).get(spend.action_id)
        if spend.spent and (entry is None or entry.get("amount") != spend.cost):
            checks["spends_exact"].fail(f"{spend.uid}/{spend.action_id}: spent {spend.cost}, entry {entry}")
        elif not spend.spent and entry is not None:
            checks["spends_exact"].fail(f"{spend.uid}/{spend.action_id}: refused, yet wrote {entry}")
    spent_total = expired_total = 0
    for uid in expectation.uids:
        audit = audit_wallet(uid, state.wallets.get(uid), state.ledgers.get(uid, {}))
        spent_total, expired_total = spent_total + audit.spent, expired_total + audit.expired
        checks["wallet_in_app_model"].count += 1
        for problem in audit.problems:
            checks["wallet_in_app_model"].fail(problem)
        checks["wallet_equals_expected"].count += 1
        expected = expected_wallets[uid] - audit.spent - audit.expired
        if audit.total != expected:
            checks["wallet_equals_expected"].fail(
                f"{uid}: wallet {audit.total}, expected {expected} (credits {expected_wallets[uid]},"
                f" spent {audit.spent}, expired {audit.expired})"
            )
        spent_here = sum(s.cost for s in spends.values() if s.uid == uid and s.spent)
        if spent_here != audit.spent:
            checks["spends_exact"].fail(f"{uid}: the app spent {spent_here}, its debits hold {audit.spent}")
        for entry_id, entry in state.ledgers.get(uid, {}).items():
            checks["no_orphan_entries"].count += 1
            if (entry_id in spends and spends[entry_id].uid == uid) or entry_id in expectation.other_writes:
                continue
            event_id = str((entry.get("metadata") or {}).get("eventId", ""))
            record = state.records.get(event_id)
            if event_id not in expectation.events:
                checks["no_orphan_entries"].fail(
                    f"{uid}/{entry_id}: event {event_id or '(none)'} is not of this run"
                )
            elif (record or {}).get("status") != "processed":
                checks["no_orphan_entries"].fail(
                    f"{uid}/{entry_id}: its event {event_id} is {(record or {}).get('status', 'missing')}"
                )

    bad = {e.event_id: e for e in expectation.events.values() if e.status == "failed_terminal"}
    must = {e for e, x in bad.items() if x.accepted}
    letters = Counter(d.event_id for d in dead_letters)
    dlq = checks["dlq_exact"]
    dlq.count = len(bad)
    for event_id in sorted(must - set(letters)):
        dlq.fail(f"{event_id} ({bad[event_id].kind}) is not in the DLQ")
        lost.append(event_id)
    for letter in dead_letters:
        expected = bad.get(letter.event_id)
        if expected is None:
            kind = expectation.events[letter.event_id].kind if letter.event_id in expectation.events else "?"
            dlq.fail(f"{letter.event_id} ({kind}) is in the DLQ ({letter.reason}) but should not be")
        elif letter.reason != expected.reason:
            dlq.fail(f"{letter.event_id}: DLQ reason {letter.reason!r}, expected {expected.reason!r}")
    duplicates = sum(n - 1 for n in letters.values() if n > 1)
    if duplicates and not dlq_duplicates_ok:
        dlq.fail(
            f"{duplicates} dead letters delivered more than once: "
            f"{[e for e, n in letters.items() if n > 1][:_EXAMPLES]}"
        )
    return InvariantReport(
        checks=checks,
        events=len(expectation.events),
        accepted=len(expectation.accepted),
        not_accepted=len(expectation.events) - len(expectation.accepted),
        processed_once=processed_once,
        lost=sorted(set(lost)),
        doubled=sorted(set(doubled)),
        dlq_expected=len(must),
        dlq_received=len(dead_letters),
        dlq_duplicates=duplicates,
        spends=sum(s.spent for s in spends.values()),
        spends_refused=sum(not s.spent for s in spends.values()),
        points_spent=spent_total,
        points_expired=expired_total,
    )
