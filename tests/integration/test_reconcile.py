"""`paynow-service reconcile` on the Firestore emulator, run as the real command.

Each test seeds a project of its own (the emulator keeps projects apart) by writing documents
directly: consistent wallets in every ledger shape of the reference, then one drift of each
kind (paid, promo against the lots, an event without its entries, an entry without its event,
a refund applied twice by hand, a stale parked refund, the app's unfinished record, an event
stranded in `queued`). `reconcile` finds each; `--fix` repairs paid and promo drift once,
after which the app's spend works on both wallets; a second `--fix` writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from google.cloud.pubsub_v1 import PublisherClient

from paynow_loadtest.app_double import AppDouble, AppError
from paynow_loadtest.processes import CLI
from paynow_service import bootstrap
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.ledger_shapes import reference_entries
from tests.support.processes import run_cli
from tests.support.stack import (
    PLAN,
    PRODUCT,
    PROMO_PRODUCT,
    apply_topology,
    pull,
    stack_env,
    unique,
    write_catalog,
)

pytestmark = [pytest.mark.emulators, pytest.mark.timeout(240)]

NOW = datetime.now(UTC)
EXPIRY = NOW + timedelta(days=300)
PAID, PROMO, EVENTLESS, MISSING, TWICE, SHAPES = (
    "u-paid",
    "u-promo",
    "u-ev",
    "u-orphan",
    "u-twice",
    "u-shapes",
)
ORDER_TWICE, ORDER_PARKED = "411000000000000301", "411000000000000302"
CREDIT_TWICE = f"paynow:order:{ORDER_TWICE}:line:l1"
EVENT_NO_ENTRIES, EVENT_GONE, EVENT_PARKED = "413000000000000001", "413000000000000002", "413000000000000003"
APP_EVENT, QUEUED_EVENT = "413000000000000004", "413000000000000005"
ORDER_EVENT, REFUND_EVENT = "413000000000000006", "413000000000000007"


def entry(entry_id: str, pre: tuple[int, int], post: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """An entry of ours: signed amount, pre/post/after/delta maps."""
    delta = {"paid": post[0] - pre[0], "promo": post[1] - pre[1]}
    amount = delta["paid"] + delta["promo"]
    return {
        "amount": amount,
        "type": "credit" if amount > 0 else "debit",
        "channel": "promo" if delta["promo"] and not delta["paid"] else "paid",
        "action": extra.pop("action", "paynow.order"),
        "actionId": entry_id,
        "source": "paynow",
        "note": entry_id,
        "metadata": extra.pop("metadata", {}),
        "pre": {"paid": pre[0], "promo": pre[1]},
        "post": {"paid": post[0], "promo": post[1]},
        "after": {"paid": post[0], "promo": post[1]},
        "delta": delta,
        "createdAt": extra.pop("created_at", NOW - timedelta(minutes=5)),
        "createdBy": "paynow-service",
        "v": 1,
        **extra,
    }


def wallet(paid: int, lots: tuple[tuple[str, int], ...] = (), promo: int | None = None) -> dict[str, Any]:
    items = [{"id": i, "amountRemaining": a, "expiresAt": EXPIRY, "source": "paynow"} for i, a in lots]
    stored = sum(a for _, a in lots) if promo is None else promo
    return {
        "paidBalance": paid,
        "promoBalance": stored,
        "promoLots": items,
        "createdAt": NOW,
        "updatedAt": NOW,
        "v": 1,
    }


def drifted_world() -> dict[str, dict[str, Any]]:
    """Document path -> data."""
    docs: dict[str, dict[str, Any]] = {}
    # Paid drift: the ledger says 100, someone set paidBalance to 150 by hand.
    docs[f"users/{PAID}/ledger/api:ops:gift-1"] = entry(
        "api:ops:gift-1", (0, 0), (100, 0), action="api.credit"
    )
    docs[f"users/{PAID}/wallet/points"] = wallet(150)
    # Promo drift: one lot of 40, promoBalance 10 (the app's spend fails on it).
    lot_entry = entry("api:ops:promo-1", (0, 0), (0, 40), action="api.credit")
    lot_entry["creditLot"] = {"lotId": "api:ops:promo-1", "amount": 40, "expiresAt": EXPIRY}
    docs[f"users/{PROMO}/ledger/api:ops:promo-1"] = lot_entry
    docs[f"users/{PROMO}/wallet/points"] = wallet(0, (("api:ops:promo-1", 40),), promo=10)
    # A processed event whose entry is gone (the wallet is empty: the points never arrived).
    docs[f"webhookEvents/{EVENT_NO_ENTRIES}"] = {
        "status": "processed",
        "eventType": "ON_ORDER_COMPLETED",
        "receivedAt": NOW,
        "result": {
            "outcome": "credited",
            "uid": EVENTLESS,
            "points": 500,
            "entryIds": ["paynow:order:x1:line:l1"],
        },
    }
    docs[f"users/{EVENTLESS}/wallet/points"] = wallet(0)
    # An entry naming an event that was never recorded.
    orphan = f"paynow:order:{unique('o')}:line:l1"
    docs[f"users/{MISSING}/ledger/{orphan}"] = entry(
        orphan, (0, 0), (500, 0), metadata={"eventId": EVENT_GONE}
    )
    docs[f"users/{MISSING}/wallet/points"] = wallet(500)
    # A refund applied twice by hand: the order counts one reversal, the ledger holds two.
    docs[f"users/{TWICE}/ledger/{CREDIT_TWICE}"] = entry(
        CREDIT_TWICE, (0, 0), (500, 0), metadata={"eventId": ORDER_EVENT, "orderId": ORDER_TWICE}
    )
    rev = f"rev:{CREDIT_TWICE}"
    docs[f"users/{TWICE}/ledger/{rev}"] = entry(
        rev,
        (500, 0),
        (0, 0),
        action="reversal",
        metadata={"reversalOf": CREDIT_TWICE, "eventId": REFUND_EVENT},
    )
    for event_id, written in ((ORDER_EVENT, CREDIT_TWICE), (REFUND_EVENT, rev)):
        docs[f"webhookEvents/{event_id}"] = {
            "status": "processed",
            "eventType": "ON_ORDER_COMPLETED" if event_id == ORDER_EVENT else "ON_REFUND",
            "receivedAt": NOW,
            "result": {"outcome": "credited", "uid": TWICE, "points": 500, "entryIds": [written]},
        }
    rev2 = f"rev2:{CREDIT_TWICE}"
    docs[f"users/{TWICE}/ledger/{rev2}"] = entry(
        rev2, (0, 0), (-500, 0), action="reversal", metadata={"reversalOf": CREDIT_TWICE}
    )
    docs[f"users/{TWICE}/wallet/points"] = wallet(-500)
    docs[f"paynowOrders/{ORDER_TWICE}"] = {
        "uid": TWICE,
        "credits": [{"entryId": CREDIT_TWICE, "points": 500, "productId": "p"}],
        "generation": 1,
        "reversals": {CREDIT_TWICE: 1},
        "reversed": [{"entryId": CREDIT_TWICE, "points": 500}],
        "reversedBy": "refund:r1",
        "status": "reversed",
        "refunds": {"r1": "approved"},
    }
    # A refund parked for 100 hours on an order that never came.
    parked_at = NOW - timedelta(hours=100)
    docs[f"paynowOrders/{ORDER_PARKED}"] = {
        "parked": {EVENT_PARKED: {"event": b"", "type": "ON_REFUND", "parkedAt": parked_at}},
        "parkedAt": parked_at,
    }
    # The app's record of an event it may have half credited, and one of ours stranded in `queued`.
    docs[f"webhookEvents/{APP_EVENT}"] = {
        "eventId": APP_EVENT,
        "rawEventType": "ON_ORDER_COMPLETED",
        "status": "received",
    }
    docs[f"webhookEvents/{QUEUED_EVENT}"] = {
        "status": "queued",
        "eventType": "ON_ORDER_COMPLETED",
        "receivedAt": NOW - timedelta(hours=1),
        "publishedAt": None,
    }
    # Every ledger shape of the reference, consistent with its wallet: notices only.
    for entry_id, data in reference_entries(NOW).items():
        docs[f"users/{SHAPES}/ledger/{entry_id}"] = data
    docs[f"users/{SHAPES}/wallet/points"] = wallet(
        250, (("3f1c9a2e-uuid", 25), ("paynow:order:o-old:line:l1", 250))
    )
    return docs


@pytest.fixture
def world(emulators: EmulatorStack, tmp_path: Path) -> dict[str, Any]:
    project = unique("reconcile")
    env = stack_env(emulators.env(), GOOGLE_CLOUD_PROJECT=project)
    db = firestore.Client(project=project)
    batch = db.batch()
    for path, data in drifted_world().items():
        batch.set(db.document(path), data)
    batch.commit()
    yield {"env": env, "db": db, "project": project, "out": tmp_path / "reports"}
    db.close()


def reconcile(world: dict[str, Any], *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("reconcile", "--no-dlq", "--out", str(world["out"]), *args, env=world["env"], timeout=120)
    assert done.returncode in (0, 1), done.stderr + done.stdout
    report_id = args[args.index("--report-id") + 1]
    report = json.loads((world["out"] / f"reconcile-{report_id}.json").read_text())
    # One log line per run, with the fields the log-based metric reads.
    [line] = [json.loads(x) for x in done.stdout.splitlines() if '"Reconciliation finished"' in x]
    assert line["severity"] == "INFO"
    assert (line["report_id"], line["drift_count"], line["fixed_count"], line["users_scanned"]) == (
        report_id,
        report["driftCount"],
        report["fixedCount"],
        report["usersScanned"],
    )
    return done.returncode, report


def kinds(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for finding in report["findings"]:
        found.setdefault(finding["kind"], []).append(finding)
    return found


def spend(project: str, uid: str, cost: int, action_id: str) -> dict[str, Any]:
    """The app's spend (its points code, as a test double), on a client of its own event loop."""

    async def go() -> dict[str, Any]:
        db = firestore.AsyncClient(project=project)
        try:
            return await AppDouble(db, backoff_initial_s=0.05).spend(uid, cost, "shop.purchase", action_id)
        finally:
            db.close()  # type: ignore[no-untyped-call]

    return asyncio.run(go())


def count_documents(db: firestore.Client) -> int:
    """Every document of the project but the run's own bookkeeping."""
    total = 0
    for collection in db.collections():
        for doc in collection.list_documents():
            if collection.id in ("reconcileRuns", "reconcileReports"):
                continue
            total += 1 if doc.get().exists else 0
            for sub in doc.collections():
                total += sum(1 for _ in sub.stream())
    return total


def test_finds_each_drift_and_fixes_the_fixable_once(world: dict[str, Any]) -> None:
    db: firestore.Client = world["db"]
    code, report = reconcile(world, "--report-id", "audit-1")
    assert code == 1
    found = kinds(report)
    assert [(f["uid"], f["fixed"]) for f in found["paid_drift"]] == [(PAID, False)]
    assert "paidBalance 150, ledger adds up to 100" in found["paid_drift"][0]["detail"]
    assert [f["uid"] for f in found["promo_drift"]] == [PROMO]
    assert [(f["eventId"], f["uid"]) for f in found["event_without_entries"]] == [
        (EVENT_NO_ENTRIES, EVENTLESS)
    ]
    # The entry whose event was never recorded, and the hand-written reversal, which names none.
    assert sorted((f["uid"], f.get("eventId", "")) for f in found["entry_without_event"]) == [
        (MISSING, EVENT_GONE),
        (TWICE, ""),
    ]
    assert [f["entryId"] for f in found["reversal_duplicate"]] == [CREDIT_TWICE]
    assert [(f["orderId"], f["entryId"]) for f in found["reversal_not_on_order"]] == [
        (ORDER_TWICE, f"rev2:{CREDIT_TWICE}")
    ]
    assert [(f["orderId"], f["eventId"]) for f in found["stale_parked"]] == [(ORDER_PARKED, EVENT_PARKED)]
    assert [f["eventId"] for f in found["app_unfinished"]] == [APP_EVENT]
    assert [f["eventId"] for f in found["stranded_queued"]] == [QUEUED_EVENT]
    # Every reference shape is read: the unknown ones and the app's reconciliation are notices.
    assert {
        f["uid"] for f in report["findings"] if f["kind"] not in ("unknown_entry", "app_reconciliation_entry")
    }.isdisjoint({SHAPES})
    assert {f["entryId"] for f in found["unknown_entry"]} == {"garbage-typed", "garbage-empty"}
    assert report["usersScanned"] == 6
    assert report["ordersScanned"] == 2
    assert report["eventsScanned"] == 5
    summary = db.document("reconcileReports/audit-1").get().to_dict()
    assert summary["driftCount"] == report["driftCount"]
    assert summary["fixedCount"] == 0
    assert summary["findingsByKind"]["paid_drift"] == 1
    assert "# Reconciliation audit-1" in summary["markdown"]
    assert (world["out"] / "reconcile-audit-1.md").read_text().startswith("# Reconciliation audit-1")

    # The app's spend fails on the promo drift before the fix.
    with pytest.raises(AppError, match="Inconsistent promo balance"):
        spend(world["project"], PROMO, 30, "spend-before-fix")

    before = count_documents(db)
    code, fixed = reconcile(world, "--fix", "--report-id", "fix-1")
    assert code == 1  # the drift --fix does not repair is still there
    found = kinds(fixed)
    assert [(f["uid"], f["fixed"], f["entryId"]) for f in found["paid_drift"]] == [
        (PAID, True, f"reconcile:fix-1:{PAID}:paid")
    ]
    assert [(f["uid"], f["fixed"]) for f in found["promo_drift"]] == [(PROMO, True)]
    assert fixed["fixedCount"] == 2
    assert all(
        not f["fixed"] for k, fs in found.items() if k not in ("paid_drift", "promo_drift") for f in fs
    )
    assert count_documents(db) == before + 2  # the paid entry and its ledgerKeys record
    adjustment = db.document(f"users/{PAID}/ledger/reconcile:fix-1:{PAID}:paid").get().to_dict()
    assert adjustment["amount"] == 50
    assert adjustment["type"] == "credit"
    assert adjustment["action"] == "reconcile"
    assert adjustment["pre"] == {"paid": 100, "promo": 0}
    assert adjustment["post"] == {"paid": 150, "promo": 0}
    assert adjustment["delta"] == {"paid": 50, "promo": 0}
    assert adjustment["after"] == adjustment["post"]
    assert db.document(f"users/{PAID}/wallet/points").get().to_dict()["paidBalance"] == 150
    assert db.document(f"users/{PROMO}/wallet/points").get().to_dict()["promoBalance"] == 40

    # The same report again writes nothing; a new report finds no balance drift and writes nothing.
    after_fix = count_documents(db)
    code, again = reconcile(world, "--fix", "--report-id", "fix-1")
    assert count_documents(db) == after_fix
    assert again["fixedCount"] == 0
    assert "paid_drift" not in kinds(again)
    assert "promo_drift" not in kinds(again)
    code, fresh = reconcile(world, "--fix", "--report-id", "fix-2")
    assert count_documents(db) == after_fix
    assert fresh["fixedCount"] == 0
    assert not {"paid_drift", "promo_drift", "promo_ledger_drift"} & set(kinds(fresh))

    # The app's spend works on both repaired wallets, and they stay reconciled after it.
    spent = spend(world["project"], PROMO, 30, "spend-after-fix")
    assert spent["consumedLots"] == [{"lotId": "api:ops:promo-1", "amount": 30}]
    spend(world["project"], PAID, 120, "spend-paid")
    code, last = reconcile(world, "--report-id", "after-spend")
    assert not {"paid_drift", "promo_drift", "promo_ledger_drift"} & set(kinds(last))


USERS = 20_000
RSS_BOUND_MB = 300  # the stated bound (docs/reconciliation.md)
KILL_AFTER_USERS = 300  # past the first checkpoints (one per --page-size users)
DRIFTED = {"u-05000": 7, "u-12345": -3, "u-19999": 11}  # uid -> paid drift


def seed_wallets(db: firestore.Client, count: int) -> None:
    """`count` consistent wallets (one in ten with a credit entry), three with paid drift, in batches."""
    batch, pending = db.batch(), 0
    for n in range(count):
        uid = f"u-{n:05d}"
        paid = 10 + n % 7
        if n % 10 == 0:  # one user in ten has a ledger entry too
            batch.set(
                db.document(f"users/{uid}/ledger/api:ops:{uid}"), entry(f"api:ops:{uid}", (0, 0), (paid, 0))
            )
            pending += 1
        else:
            paid = 0
        batch.set(db.document(f"users/{uid}/wallet/points"), wallet(paid + DRIFTED.get(uid, 0)))
        pending += 1
        if pending >= 490:
            batch.commit()
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()


def _users_done(progress_line: str) -> int:
    found = re.search(r"users: users (\d+)", progress_line)
    return int(found.group(1)) if found else 0


def watch(process: subprocess.Popen[str], stop_after_progress: bool) -> tuple[int, list[str]]:
    """Peak RSS (MB, from /proc VmHWM) of the running process; with `stop_after_progress`, SIGKILL it
    once it has printed a progress line past its first users."""
    assert process.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    peak_kb = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        if stop_after_progress and any(_users_done(line) > KILL_AFTER_USERS for line in list(lines)):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    reader.join(timeout=10)
    process.stderr.close()
    return peak_kb // 1024, lines


def test_twenty_thousand_users_in_bounded_memory_resume_after_a_kill(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    project = unique("reconcile-big")
    env = {**os.environ, **stack_env(emulators.env(), GOOGLE_CLOUD_PROJECT=project)}
    db = firestore.Client(project=project)
    started = time.monotonic()
    seed_wallets(db, USERS)
    seeded_s = time.monotonic() - started
    assert seeded_s < 90, f"seeding took {seeded_s:.0f} s"
    args = [*CLI, "reconcile", "--no-dlq", "--report-id", "big", "--page-size", "100", "--out", str(tmp_path)]

    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_peak_mb, first_lines = watch(first, stop_after_progress=True)
    assert first.returncode == -signal.SIGKILL, first_lines
    saved = db.document("reconcileRuns/big").get().to_dict()
    assert saved["phase"] == "users", saved
    assert 0 < saved["usersScanned"] < USERS, saved

    resumed_at = time.monotonic()
    second = subprocess.Popen(
        [*args, "--resume"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    second_peak_mb, second_lines = watch(second, stop_after_progress=False)
    resumed_s = time.monotonic() - resumed_at
    assert second.returncode == 1, second_lines  # the three drifted wallets
    report = json.loads((tmp_path / "reconcile-big.json").read_text())
    assert report["usersScanned"] == USERS
    assert report["usersScannedThisRun"] == USERS - saved["usersScanned"]
    assert report["resumedFrom"] == f"users:{saved['after']}"
    drift = [(f["uid"], f["kind"]) for f in report["findings"]]
    assert sorted(drift) == sorted((uid, "paid_drift") for uid in DRIFTED)
    assert first_peak_mb < RSS_BOUND_MB
    assert second_peak_mb < RSS_BOUND_MB
    assert report["peakRssMb"] < RSS_BOUND_MB
    finished = run_cli(*args[3:], "--resume", env=env, timeout=60)
    assert finished.returncode == 2
    assert "is finished: nothing to resume" in finished.stderr
    print(
        f"seeded {USERS} wallets in {seeded_s:.1f} s; killed after {saved['usersScanned']} users "
        f"(peak {first_peak_mb} MB); resumed run {resumed_s:.1f} s, peak {second_peak_mb} MB "
        f"(self-reported {report['peakRssMb']} MB)"
    )
    db.close()


def test_dead_letters_are_counted_and_left_in_place(emulators: EmulatorStack, tmp_path: Path) -> None:
    project = unique("reconcile-dlq")
    env = stack_env(emulators.env(), GOOGLE_CLOUD_PROJECT=project)
    settings = Settings.from_env(env)
    apply_topology(settings)
    publisher = PublisherClient()
    topic = settings.topic_path(settings.pubsub_dlq_topic)
    publisher.publish(topic, b"not an event", reason="invalid_event", error_class="terminal").result(
        timeout=30
    )
    done = run_cli("reconcile", "--report-id", "dlq-1", "--out", str(tmp_path), env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    report = json.loads((tmp_path / "reconcile-dlq-1.json").read_text())
    assert report["dlq"]["available"] is True
    assert report["dlq"]["count"] == 1
    assert [f["kind"] for f in report["findings"]] == ["dlq_backlog"]
    assert len(pull(settings, settings.pubsub_dlq_subscription, want=1)) == 1  # still there
    # Without the subscription the run still finishes, and says it could not read it.
    missing = {**env, "PUBSUB_DLQ_SUBSCRIPTION": unique("absent")}
    done = run_cli("reconcile", "--report-id", "dlq-2", "--out", str(tmp_path), env=missing, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "reconcile-dlq-2.json").read_text())
    assert report["dlq"]["available"] is False
    assert "NotFound" in report["dlq"]["error"]


def test_a_history_the_service_wrote_itself_is_clean(emulators: EmulatorStack, tmp_path: Path) -> None:
    """Orders, a promo order, a refund failed after its approval, a dispute won, a refund parked
    before its order, a subscription, the app's spends: no drift, nothing to fix."""
    project = unique("reconcile-clean")
    env = stack_env(emulators.env(), write_catalog(tmp_path), GOOGLE_CLOUD_PROJECT=project)
    settings = Settings.from_env(env)
    alice, bob = "u-alice", "u-bob"
    o1, o2, o3 = flake_id(), flake_id(), flake_id()

    async def history() -> None:
        container = bootstrap.build_container(settings)

        async def process(
            event_type: str, *, uid: str = "", product: str = PRODUCT, body_id: str = "", **fields: Any
        ) -> str:
            payload = build_event(event_type, uid=uid, product_id=product, **fields)
            if body_id:
                payload["body"]["id"] = body_id  # the refund's or the dispute's own id
            now = int(time.time() * 1000)
            event = parse_webhook(json.dumps(payload).encode(), received_at_ms=now, sent_at_ms=now)
            outcome = await container.core.process(event, component="test")
            assert outcome.status == "processed", outcome
            return outcome.decision.result if outcome.decision else ""

        try:
            assert await process("ON_ORDER_COMPLETED", uid=alice, order_id=o1) == "credited"
            assert (
                await process("ON_ORDER_COMPLETED", uid=bob, order_id=o2, product=PROMO_PRODUCT) == "credited"
            )
            refund = flake_id()
            assert await process("ON_REFUND", order_id=o1, status="approved", body_id=refund) == "reversed"
            assert await process("ON_REFUND", order_id=o1, status="failed", body_id=refund) == "recredited"
            dispute = flake_id()
            assert await process("ON_CHARGEBACK", order_id=o1, body_id=dispute) == "reversed"
            won = await process(
                "ON_CHARGEBACK_CLOSED", order_id=o1, body_id=dispute, chargeback_status="won", status="closed"
            )
            assert won == "recredited"
            assert await process("ON_REFUND", order_id=o3, status="approved", body_id=flake_id()) == "parked"
            assert await process("ON_ORDER_COMPLETED", uid=bob, order_id=o3) == "credited"
            assert await process("ON_SUBSCRIPTION_ACTIVATED", uid=alice, product=PLAN) == "credited"
        finally:
            await container.aclose()

    asyncio.run(history())
    spend(project, alice, 700, "spend-alice")
    spend(project, bob, 30, "spend-bob")
    world = {"env": env, "out": tmp_path / "reports"}
    code, report = reconcile(world, "--fix", "--report-id", "clean")
    drift = [f for f in report["findings"] if f["kind"] not in ("unknown_entry", "entry_without_balances")]
    assert drift == []
    assert code == 0
    assert (report["usersScanned"], report["ordersScanned"], report["fixedCount"]) == (2, 3, 0)
