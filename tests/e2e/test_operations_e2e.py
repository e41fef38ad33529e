"""Operations end to end: /metrics counts what happened, a queue -> sync flip loses nothing,
and the logs of a full run hold no secret, signature, token or personal data."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import signed_headers
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.config import Settings
from paynow_service.domain.signature import sign
from paynow_service.sample_webhooks import EVENT_TYPES, build_event, flake_id
from tests.support.processes import serve
from tests.support.stack import (
    PRODUCT,
    apply_topology,
    doc,
    ledger,
    stack_env,
    unique,
    wait_for,
    write_catalog,
)

SECRET = "pn-test-secret-one"
PII_KEYS = ("email", "name", "ip", "address", "steam", "minecraft", "avatar", "phone", "username")


def post(
    port: int,
    event: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    ts: int | None = None,
    method: str = "POST",
) -> httpx.Response:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = signed_headers(secret, body, ts_ms=ts)
    return httpx.request(
        method, f"http://127.0.0.1:{port}/api/paynow/webhook", content=body, headers=headers, timeout=15
    )


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def sync_server(emulators: EmulatorStack, tmp_path: Path) -> Iterator[tuple[ServiceProcess, Settings]]:
    env = stack_env(
        emulators.env(), write_catalog(tmp_path), WEBHOOK_MODE="sync", HTTP_ROUTES="webhook,metrics,points"
    )
    settings = Settings.from_env(env)
    apply_topology(settings)
    http = serve(env, tmp_path)
    try:
        yield http, settings
    finally:
        http.stop()


def test_metrics_count_every_outcome(sync_server: tuple[ServiceProcess, Settings]) -> None:
    http, _ = sync_server
    port = http.port
    assert port is not None
    uid = unique("u")
    sent = {"processed": 0, "duplicate": 0, "ignored": 0, "failed_terminal": 0}
    for quantity in (1, 2, 3):
        event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, quantity=quantity)
        assert post(port, event).json()["status"] == "processed"
        sent["processed"] += 1
        assert post(port, event).json()["status"] == "duplicate"
        sent["duplicate"] += 1
    for kind in ("ON_PAYMENT_COMPLETED", "ON_TRIAL_ACTIVATED"):
        assert post(port, build_event(kind, uid=uid, product_id=PRODUCT)).json()["status"] == "ignored"
        sent["ignored"] += 1
    assert (
        post(port, build_event("ON_ORDER_COMPLETED", uid=uid, product_id="1")).json()["status"]
        == "failed_terminal"
    )
    sent["failed_terminal"] += 1
    refund_first = build_event(
        "ON_REFUND", uid=uid, product_id=PRODUCT, order_id=flake_id(), status="completed"
    )
    # Ahead of its order: parked on it and acknowledged, counted as processed (no points moved yet).
    assert post(port, refund_first).json()["status"] == "processed"
    sent["processed"] += 1
    assert (
        post(
            port, build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT), secret="pn-wrong"
        ).status_code
        == 401
    )
    assert post(port, b"{nope").status_code == 400
    assert post(port, b"{" + b" " * 300_000 + b"}").status_code == 413
    assert (
        post(
            port,
            build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT),
            ts=int(time.time() * 1000) - 3_600_000,
        ).status_code
        == 401
    )
    assert httpx.get(f"http://127.0.0.1:{port}/api/paynow/webhook").status_code == 405

    m = samples(port)
    for outcome, count in sent.items():
        assert (
            value(m, "paynow_webhook_responses_total", code="200", mode="sync", outcome=outcome) == count
        ), outcome
    assert value(m, "paynow_webhook_responses_total", code="503", mode="sync", outcome="transient") == 0
    assert (
        value(m, "paynow_webhook_responses_total", code="401", mode="sync", outcome="invalid_signature") == 1
    )
    assert (
        value(m, "paynow_webhook_responses_total", code="401", mode="sync", outcome="invalid_timestamp") == 1
    )
    assert value(m, "paynow_webhook_responses_total", code="400", mode="sync", outcome="malformed") == 1
    assert value(m, "paynow_webhook_responses_total", code="413", mode="sync", outcome="too_large") == 1
    assert (
        value(m, "paynow_webhook_responses_total", code="405", mode="sync", outcome="method_not_allowed") == 1
    )
    worker = {
        o: value(m, "paynow_worker_outcomes_total", component="paynow_webhook", outcome=o)
        for o in ("processed", "duplicate", "failed_terminal", "transient")
    }
    # Duplicates of processed events are answered from the record, before the core runs.
    assert worker == {"processed": 4, "duplicate": 0, "failed_terminal": 1, "transient": 0}
    assert value(m, "paynow_points_total", direction="credited") == 500 * (1 + 2 + 3)
    assert value(m, "paynow_dead_letters_total", reason="unknown_product", error_class="terminal") == 1
    total_answers = sum(v for (name, _), v in m.items() if name == "paynow_webhook_responses_total")
    assert value(m, "paynow_webhook_latency_seconds_count", mode="sync") == total_answers


def test_flip_queue_to_sync_with_events_in_flight(emulators: EmulatorStack, tmp_path: Path) -> None:
    """Rollback drill: restart only the HTTP app with WEBHOOK_MODE=sync while PayNow keeps sending."""
    port = free_port()
    env = stack_env(emulators.env(), write_catalog(tmp_path), HTTP_ROUTES="webhook", PORT=str(port))
    settings = Settings.from_env(env)
    apply_topology(settings)
    http = ServiceProcess("serve", {**env, "WEBHOOK_MODE": "queue"}, tmp_path, port=port).wait_ready()
    worker = ServiceProcess("worker", env, tmp_path)
    users = [unique("u") for _ in range(6)]
    events = [
        build_event("ON_ORDER_COMPLETED", uid=users[i % len(users)], product_id=PRODUCT) for i in range(60)
    ]
    answers: list[int] = []

    def paynow() -> None:
        """Sends each event until a 2xx, as PayNow retries (bounded)."""
        for event in events:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    response = post(port, event)
                    if response.status_code < 300:
                        answers.append(response.status_code)
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            time.sleep(0.05)

    sender = threading.Thread(target=paynow, daemon=True)
    try:
        sender.start()
        assert wait_for(lambda: len(answers) >= 20, timeout=30)
        http.stop()  # rollback: the webhook comes back in sync mode on the same port
        http = ServiceProcess("serve", {**env, "WEBHOOK_MODE": "sync"}, tmp_path, port=port).wait_ready()
        sender.join(120)
        assert not sender.is_alive()
        assert len(answers) == len(events)
        project = settings.google_cloud_project
        expected = {
            uid: 500 * sum(1 for e in events if e["body"]["checkout"]["metadata"]["uid"] == uid)
            for uid in users
        }
        assert wait_for(
            lambda: all(
                (doc(project, f"users/{u}/wallet/points") or {}).get("paidBalance") == n
                for u, n in expected.items()
            ),
            timeout=60,
        )
        for uid in users:
            entries = ledger(project, uid)
            assert len(entries) == expected[uid] // 500
            assert len({e["metadata"]["eventId"] for e in entries.values()}) == len(entries)
        assert '"webhook_mode":"sync"' in http.logs()
    finally:
        http.stop()
        worker.stop()


def _pii_values(node: Any, key: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            found |= _pii_values(v, k)
    elif isinstance(node, list):
        for v in node:
            found |= _pii_values(v, key)
    elif isinstance(node, str) and len(node) >= 6 and any(p in key.lower() for p in PII_KEYS):
        found.add(node)
    return found


def test_logs_of_a_full_run_hold_no_secret_signature_token_or_pii(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    env = stack_env(
        emulators.env(), write_catalog(tmp_path), WEBHOOK_MODE="queue", HTTP_ROUTES="webhook,push"
    )
    apply_topology(Settings.from_env(env))
    http = serve(env, tmp_path, LOG_LEVEL="DEBUG")
    worker = ServiceProcess("worker", {**env, "LOG_LEVEL": "DEBUG"}, tmp_path)
    secrets = {SECRET, "pn-test-secret-two", "pn-" + "ab" * 16}
    signatures: set[str] = set()
    pii: set[str] = set()
    port = http.port
    assert port is not None
    try:
        uid = unique("u")
        for kind in EVENT_TYPES:
            event = build_event(kind, uid=uid, product_id=PRODUCT)
            pii |= _pii_values(event["body"])
            answer = post(port, event)  # signed with SECRET, as the file's `post` does
            signatures.add(answer.request.headers["PayNow-Signature"])
        forged = json.dumps(build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT)).encode()
        leaked_secret_sig = sign("pn-" + "ab" * 16, "1", forged)
        signatures.add(leaked_secret_sig)
        httpx.post(
            f"http://127.0.0.1:{port}/api/paynow/webhook",
            content=forged,
            timeout=15,
            headers={
                "PayNow-Signature": leaked_secret_sig,
                "PayNow-Timestamp": "1",
                "X-Debug": "pn-" + "ab" * 16,
            },
        )
        token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJlbWFpbCI6ImFAYi5jIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
        httpx.post(
            f"http://127.0.0.1:{port}/api/tasks/paynow/process",
            content=b"{}",
            timeout=15,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert wait_for(
            lambda: (
                (doc(env["GOOGLE_CLOUD_PROJECT"], f"users/{uid}/wallet/points") or {}).get("paidBalance")
                == 500
            ),
            timeout=30,
        )
    finally:
        http.stop()
        worker.stop()
    logs = http.logs() + worker.logs()
    assert "Webhook received" in logs
    assert "Worker processed event successfully" in logs
    assert pii, "the payloads carried personal data to look for"
    for needle in sorted(secrets | signatures | pii | {token}):
        assert needle not in logs, f"found in logs: {needle[:12]}..."
    lags = []
    for line in logs.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            assert "severity" in entry
            assert "jsonPayload" not in entry
            if entry.get("message") == "Worker processed event successfully":
                lags.append(entry.get("publish_lag_ms"))
    # The publish -> processed lag the alert policy reads (infra/monitoring): on every success line.
    assert lags
    assert all(isinstance(lag, float | int) and 0 <= lag < 60_000 for lag in lags), lags


def test_public_webhook_service_serves_only_its_routes_and_readyz_follows_firestore(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    env = stack_env(emulators.env(), write_catalog(tmp_path), WEBHOOK_MODE="queue", HTTP_ROUTES="webhook")
    apply_topology(Settings.from_env(env))
    http = serve(env, tmp_path)
    base = f"http://127.0.0.1:{http.port}"
    try:
        assert httpx.get(f"{base}/metrics").status_code == 404
        points = httpx.post(f"{base}/paynow.points.v1.PointsService/GetBalance", json={"uid": "u1"})
        assert points.status_code == 404
        assert httpx.post(f"{base}/api/tasks/paynow/process", content=b"{}").status_code == 404
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"firestore": "ok", "pubsub": "ok"}
        emulators.firestore.pause()
        try:
            # /readyz caches its answer for 2 s: the pause shows from the next check on.
            deadline = time.monotonic() + 15
            down = httpx.get(f"{base}/readyz", timeout=10)
            while down.status_code != 503 and time.monotonic() < deadline:
                time.sleep(0.5)
                down = httpx.get(f"{base}/readyz", timeout=10)
        finally:
            emulators.firestore.resume()
        assert down.status_code == 503
        assert down.json()["checks"]["firestore"] == "unavailable"  # generic words, no exception names
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        http.stop()
