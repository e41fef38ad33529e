"""Dead letters round trip through the CLI: list, replay after a fix (credited exactly once), purge."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.cloud import firestore

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.config import Settings
from paynow_service.sample_webhooks import build_event
from tests.support.processes import run_cli, serve
from tests.support.stack import (
    CATALOG,
    apply_topology,
    doc,
    ledger,
    stack_env,
    unique,
    wait_for,
    write_catalog,
)

NEW_PRODUCT = "411486491630379999"
SECRET = "pn-test-secret-one"


def send(port: int, event: dict) -> int:
    url = f"http://127.0.0.1:{port}/api/paynow/webhook"
    return post(url, json.dumps(event).encode(), SECRET, timeout=10).status_code


def dlq_json(env: dict[str, str]) -> list[dict]:
    result = run_cli("dlq", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_dead_letter_list_replay_purge(emulators: EmulatorStack, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path)
    # The worker restarts in this test: unary pulls (the emulator never delivers to a new
    # streaming subscriber once an earlier stream on the subscription has ended).
    env = stack_env(
        emulators.env(), catalog, WEBHOOK_MODE="queue", HTTP_ROUTES="webhook", WORKER_PULL_MODE="unary"
    )
    settings = Settings.from_env(env)
    apply_topology(settings)
    http = serve(env, tmp_path)
    worker = ServiceProcess("worker", env, tmp_path)
    try:
        uid = unique("u")
        unknown = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=NEW_PRODUCT, quantity=2)
        other = build_event("ON_ORDER_COMPLETED", uid=unique("u"), product_id="404")
        assert send(http.port, unknown) == 200  # type: ignore[arg-type]
        assert send(http.port, other) == 200  # type: ignore[arg-type]
        project = settings.google_cloud_project
        assert wait_for(
            lambda: all(
                (doc(project, f"webhookEvents/{e['event_id']}") or {}).get("status") == "failed_terminal"
                for e in (unknown, other)
            ),
            timeout=30,
        )

        letters = dlq_json(env)
        by_id = {d["event_id"]: d for d in letters}
        assert set(by_id) == {unknown["event_id"], other["event_id"]}
        assert by_id[unknown["event_id"]]["reason"] == "unknown_product"
        assert by_id[unknown["event_id"]]["error_class"] == "terminal"
        assert by_id[unknown["event_id"]]["ordering_key"] == uid
        table = run_cli("dlq", "list", env=env)
        assert unknown["event_id"] in table.stdout
        assert "2 dead letter(s)" in table.stdout
        assert len(dlq_json(env)) == 2  # listing consumes nothing

        # The fix: the product enters the catalog; the worker restarts with it.
        catalog.write_text(CATALOG + f'\n[products."{NEW_PRODUCT}"]\npoints = 300\n')
        worker.stop()
        worker = ServiceProcess("worker", env, tmp_path)

        dry = run_cli("dlq", "replay", "--event-id", unknown["event_id"], "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "would replay" in dry.stdout
        assert len(dlq_json(env)) == 2
        replay = run_cli("dlq", "replay", "--event-id", unknown["event_id"], env=env)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        wallet_path = f"users/{uid}/wallet/points"
        assert wait_for(lambda: (doc(project, wallet_path) or {}).get("paidBalance") == 600, timeout=30)
        twice = run_cli("dlq", "replay", "--event-id", unknown["event_id"], env=env)
        assert twice.returncode == 1  # nothing left to replay: said, and nothing done
        assert "no dead letter" in twice.stderr
        time.sleep(2)
        assert (doc(project, wallet_path) or {}).get("paidBalance") == 600
        assert len(ledger(project, uid)) == 1
        assert (doc(project, f"webhookEvents/{unknown['event_id']}") or {}).get("status") == "processed"

        refused = run_cli("dlq", "purge", env=env, stdin="")
        assert refused.returncode == 1
        assert "Nothing deleted" in refused.stdout
        assert [d["event_id"] for d in dlq_json(env)] == [other["event_id"]]
        purged = run_cli("dlq", "purge", "--yes", env=env)
        assert purged.returncode == 0
        assert dlq_json(env) == []
    finally:
        http.stop()
        worker.stop()


@pytest.mark.parametrize("action", ["replay"])
def test_replay_needs_a_target(emulators: EmulatorStack, tmp_path: Path, action: str) -> None:
    env = stack_env(emulators.env(), write_catalog(tmp_path))
    apply_topology(Settings.from_env(env))
    result = run_cli("dlq", action, env=env)
    assert result.returncode == 2
    assert "--event-id" in result.stderr


def test_sweep_dead_letters_what_stayed_parked_past_park_max_hours(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    """A refund whose order never came: parked, then after PARK_MAX_HOURS dead-lettered by `sweep` as
    `order_not_credited` and taken off the order; a younger parked refund stays where it is."""
    env = stack_env(
        emulators.env(), write_catalog(tmp_path, CATALOG), WEBHOOK_MODE="sync", HTTP_ROUTES="webhook"
    )
    settings = Settings.from_env(env)
    apply_topology(settings)
    project = settings.google_cloud_project
    http = serve(env, tmp_path)
    try:
        assert http.port is not None
        old, young = (build_event("ON_REFUND", uid="x", product_id="1", status="approved") for _ in range(2))
        for refund in (old, young):
            assert send(http.port, refund) == 200
            assert (doc(project, f"webhookEvents/{refund['event_id']}") or {}).get("status") == "parked"
    finally:
        http.stop()
    # 73 hours pass for the first refund only.
    client = firestore.Client(project=project)
    order_id = old["body"]["order_id"]
    past = datetime.now(UTC) - timedelta(hours=73)
    client.document("paynowOrders", order_id).update(
        {"parkedAt": past, f"parked.`{old['event_id']}`.parkedAt": past}
    )
    dry = run_cli("sweep", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"would dead-letter {old['event_id']}" in dry.stdout
    assert young["event_id"] not in dry.stdout
    result = run_cli("sweep", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "parked past 72 h: 1, dead-lettered: 1, failed: 0" in result.stdout
    record = doc(project, f"webhookEvents/{old['event_id']}") or {}
    assert (record.get("status"), record.get("failureReason")) == ("failed_terminal", "order_not_credited")
    assert not (doc(project, f"paynowOrders/{order_id}") or {}).get("parked")
    letters = wait_for(lambda: [d for d in dlq_json(env) if d.get("event_id") == old["event_id"]], timeout=20)
    assert [(d["reason"], d["error_class"]) for d in letters] == [("order_not_credited", "terminal")]
    assert (doc(project, f"webhookEvents/{young['event_id']}") or {}).get("status") == "parked"
    again = run_cli("sweep", env=env)
    assert "parked past 72 h: 0, dead-lettered: 0, failed: 0" in again.stdout
