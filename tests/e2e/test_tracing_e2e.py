"""One event, one trace: webhook -> record and publish -> Pub/Sub -> worker -> transaction attempt.

The service runs as its real processes on the emulators (queue mode), once with the pull worker and
once with Pub/Sub pushing to serve's push endpoint, each writing its spans as JSON lines
(OTEL_EXPORTER=file, every trace sampled). The test follows one event through the spans of both
processes by their parent links, checks their attributes (ids, ordering key, outcome) and that no
PII of the webhook's body is in any span, and that the event's log lines carry its trace id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.pubsub_infra import InfraOverrides
from paynow_service.config import Settings
from paynow_service.sample_webhooks import build_event
from tests.support.processes import serve
from tests.support.stack import PRODUCT, apply_topology, doc, stack_env, unique, wait_for, write_catalog

SECRET = "pn-test-secret-one"
TRACE_FIELD = "logging.googleapis.com/trace"
# The PII a PayNow order carries (sample_webhooks.py), replaced by markers unique to the test.
PII = ("Alex Example", "buyer@example.com", "203.0.113.7", "alex_example", "AlexExample")


class TracedStack:
    def __init__(
        self, kind: str, env: dict[str, str], http: ServiceProcess, worker: ServiceProcess | None
    ) -> None:
        self.kind = kind
        self.settings = Settings.from_env(env)
        self.http = http
        self.worker = worker
        self.span_files = [Path(env["TRACE_FILE"]).with_name(f"{name}.jsonl") for name in ("serve", "worker")]

    def spans(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for path in self.span_files:
            if path.exists():
                found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return found

    def log_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for process in (self.http, self.worker):
            if process is not None:
                lines += [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
        return lines

    def paid(self, uid: str) -> int | None:
        wallet = doc(self.settings.google_cloud_project, f"users/{uid}/wallet/points")
        return None if wallet is None else int(wallet["paidBalance"])


@pytest.fixture(scope="module", params=["pull", "push"])
def stack(
    request: pytest.FixtureRequest, emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TracedStack]:
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"tracing-{kind}")
    env = stack_env(
        emulators.env(),
        write_catalog(tmp),
        WEBHOOK_MODE="queue",
        HTTP_ROUTES="webhook,push" if kind == "push" else "webhook",
        OTEL_EXPORTER="file",
        TRACE_FILE=str(tmp / "serve.jsonl"),
        TRACE_SAMPLE_RATIO="1",
        OTEL_BSP_SCHEDULE_DELAY="100",  # the SDK's batch: exported within 0.1 s, not 5 s
    )
    http = serve(env, tmp)
    overrides = InfraOverrides(
        ack_deadline_s=10,
        min_backoff_s=1,
        max_backoff_s=2,
        push_endpoint=f"http://127.0.0.1:{http.port}/api/tasks/paynow/process" if kind == "push" else None,
    )
    apply_topology(Settings.from_env(env), overrides)
    worker = (
        ServiceProcess("worker", {**env, "TRACE_FILE": str(tmp / "worker.jsonl")}, tmp)
        if kind == "pull"
        else None
    )
    try:
        yield TracedStack(kind, env, http, worker)
    finally:
        http.stop()
        if worker is not None:
            worker.stop()


def _order_with_pii(uid: str) -> tuple[dict[str, Any], list[str]]:
    """An order whose customer's name, email, IP, Steam and Minecraft names are markers of this test."""
    text = json.dumps(build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT))
    markers = []
    for value in PII:
        assert value in text, value
        marker = unique("pii")
        text = text.replace(value, marker)
        markers.append(marker)
    return json.loads(text), markers


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = span["attributes"]
    return attributes


def _one(spans: list[dict[str, Any]], name: str, parent: dict[str, Any]) -> dict[str, Any]:
    children = [s for s in spans if s["name"] == name and s["parent_id"] == parent["context"]["span_id"]]
    assert len(children) == 1, (name, [s["name"] for s in spans])
    return children[0]


def test_one_event_is_one_trace_from_the_webhook_to_its_transaction(stack: TracedStack) -> None:
    uid = unique("u")
    event, markers = _order_with_pii(uid)
    event_id = event["event_id"]
    url = f"http://127.0.0.1:{stack.http.port}/api/paynow/webhook"
    response = post(url, json.dumps(event).encode(), SECRET)
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert wait_for(lambda: stack.paid(uid) == 500, timeout=30), stack.kind

    def trace() -> list[dict[str, Any]]:
        """The spans of the event's trace, once the worker's committed attempt is among them."""
        spans = stack.spans()
        roots = [s for s in spans if _attrs(s).get("paynow.event_id") == event_id and s["parent_id"] is None]
        if not roots:
            return []
        mine = [s for s in spans if s["context"]["trace_id"] == roots[0]["context"]["trace_id"]]
        names = {s["name"] for s in mine}
        done = {"worker.handle", "firestore.transaction.attempt"} <= names
        return mine if done and any(_attrs(s).get("paynow.outcome") == "committed" for s in mine) else []

    spans = wait_for(trace, timeout=20)
    assert spans, f"no complete trace of {event_id} in {[s['name'] for s in stack.spans()]}"

    [webhook] = [s for s in spans if s["parent_id"] is None]
    assert webhook["name"] == "POST /api/paynow/webhook"
    assert webhook["kind"] == "SpanKind.SERVER"
    assert {
        k: _attrs(webhook).get(k) for k in ("paynow.event_id", "paynow.ordering_key", "paynow.outcome")
    } == {
        "paynow.event_id": event_id,
        "paynow.ordering_key": uid,
        "paynow.outcome": "queued",
    }
    assert _attrs(webhook)["http.response.status_code"] == 200
    record = _one(spans, "ingest.record", webhook)
    assert _attrs(record)["paynow.outcome"] == "created"
    publish = _one(spans, "ingest.publish", webhook)
    assert publish["kind"] == "SpanKind.PRODUCER"
    assert _attrs(publish)["paynow.outcome"] == "published"
    assert _attrs(publish)["paynow.ordering_key"] == uid

    # Across Pub/Sub: the worker's span is the publish's child, in the worker's own process.
    handle = _one(spans, "worker.handle", publish)
    assert handle["kind"] == "SpanKind.CONSUMER"
    process = "paynow-service-worker" if stack.kind == "pull" else "paynow-service-serve"
    assert handle["resource"]["attributes"]["service.name"] == process
    assert {
        k: _attrs(handle).get(k) for k in ("paynow.event_id", "paynow.ordering_key", "paynow.outcome")
    } == {
        "paynow.event_id": event_id,
        "paynow.ordering_key": uid,
        "paynow.outcome": "processed",
    }
    attempts = [s for s in spans if s["name"] == "firestore.transaction.attempt"]
    assert attempts
    assert {s["parent_id"] for s in attempts} == {handle["context"]["span_id"]}
    numbers = sorted(_attrs(s)["paynow.attempt"] for s in attempts)
    assert numbers == list(range(1, len(attempts) + 1))
    last = max(attempts, key=lambda s: _attrs(s)["paynow.attempt"])
    assert _attrs(last)["paynow.outcome"] == "committed"
    assert _attrs(last)["paynow.retry_count"] == len(attempts) - 1

    # No PII: none of the body's personal data in any span (attributes, names, events).
    everything = json.dumps(stack.spans())
    assert not [marker for marker in markers if marker in everything]

    # The event's log lines, in both processes, carry its trace.
    trace_id = webhook["context"]["trace_id"].removeprefix("0x")
    expected = f"projects/{stack.settings.google_cloud_project}/traces/{trace_id}"
    wanted = {"Webhook received", "Webhook processed successfully", "Worker received message"}
    wanted.add("Worker processed event successfully")

    def event_lines() -> list[dict[str, Any]]:
        lines = [line for line in stack.log_lines() if line.get("event_id") == event_id]
        return lines if wanted <= {line["message"] for line in lines} else []

    lines = wait_for(event_lines, timeout=10)
    assert lines, [line["message"] for line in stack.log_lines() if line.get("event_id") == event_id]
    assert {line["message"]: line.get(TRACE_FIELD) for line in lines} == dict.fromkeys(
        {line["message"] for line in lines}, expected
    )
    assert all(line["logging.googleapis.com/trace_sampled"] is True for line in lines)
    worker_line = next(line for line in lines if line["message"] == "Worker received message")
    assert worker_line["logging.googleapis.com/spanId"] == handle["context"]["span_id"].removeprefix("0x")
