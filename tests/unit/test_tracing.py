"""Tracing (paynow_service/tracing.py): setup from the settings, the `traceparent` a message carries,
the spans of the worker, of transaction attempts and of PointsService, the trace in log lines, and
the no-op path when OTEL_EXPORTER is `none` (the default)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.api_core import exceptions as gexc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.routing import Mount

from paynow_service import logs, tracing
from paynow_service.adapters.event_codec import encode_event
from paynow_service.config import ConfigError, Settings
from paynow_service.domain.errors import LedgerConflictError
from paynow_service.domain.provenance import ATTR_EVENT_MAC, event_mac
from paynow_service.entrypoints.connect_points import build_points_asgi
from paynow_service.entrypoints.grpc_server import _server
from paynow_service.entrypoints.points_api import SERVICE_NAME, LocalCaller, rpc_span, traced_result
from paynow_service.gen.paynow.points.v1 import points_service_pb2 as pb
from paynow_service.gen.paynow.points.v1 import points_service_pb2_grpc as pb_grpc
from paynow_service.service.points import PointsCore
from tests.unit.test_firestore_transactions import failing, runner
from tests.unit.test_points_service import MemoryLedger
from tests.unit.test_provenance import NEW, an_event, message, publisher, worker

PROJECT = "paynow-test"
REMOTE_TRACE = "0af7651916cd43dd8448eb211c80319c"
REMOTE_SPAN = "b7ad6b7169203331"


def _traced(ratio: float = 1.0) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider, PROJECT)
    return exporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span sampled, kept in memory; off again after the test."""
    try:
        yield _traced()
    finally:
        tracing.uninstall()


def _line(message: str = "Worker received message", **fields: object) -> dict[str, Any]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    record.fields = fields
    parsed: dict[str, Any] = json.loads(logs.JsonFormatter().format(record))
    return parsed


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


# ---- off (the default) -------------------------------------------------------------------------


def test_tracing_is_off_by_default_and_costs_a_shared_no_op() -> None:
    settings = Settings.from_env({})
    assert (settings.otel_exporter, settings.trace_sample_ratio, settings.trace_file) == ("none", 0.1, None)
    tracing.setup(settings, "serve")
    assert not tracing.enabled()
    first, second = tracing.span("a"), tracing.span("b", root=True)
    assert first is second  # no object built per call
    with first as span:
        assert not span.is_recording()
        assert tracing.current_span() is trace.INVALID_SPAN
    attributes = {"event_id": "e1"}
    tracing.inject(attributes)
    assert attributes == {"event_id": "e1"}  # no traceparent on the message
    assert tracing.extract({"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"}) is None
    assert not any(key.startswith("logging.googleapis.com") for key in _line())


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"OTEL_EXPORTER": "jaeger"}, "OTEL_EXPORTER"),
        ({"TRACE_SAMPLE_RATIO": "1.5"}, "TRACE_SAMPLE_RATIO"),
        ({"TRACE_SAMPLE_RATIO": "all"}, "TRACE_SAMPLE_RATIO"),
        ({"OTEL_EXPORTER": "file"}, "TRACE_FILE"),
        ({"OTEL_EXPORTER": "file", "TRACE_FILE": "/no/such/dir/spans.jsonl"}, "TRACE_FILE"),
    ],
)
def test_bad_tracing_settings_stop_the_process_with_one_line(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)


def test_the_file_exporter_appends_one_json_line_per_span(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    settings = Settings.from_env(
        {"OTEL_EXPORTER": "file", "TRACE_FILE": str(path), "TRACE_SAMPLE_RATIO": "1"}
    )
    tracing.setup(settings, "worker")
    try:
        assert tracing.enabled()
        with tracing.span("outer", root=True), tracing.span("inner"):
            pass
        tracing.flush()
    finally:
        tracing.uninstall()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["inner", "outer"]
    inner, outer = lines
    assert inner["parent_id"] == outer["context"]["span_id"]
    assert outer["resource"]["attributes"]["service.name"] == "paynow-service-worker"


# ---- propagation -------------------------------------------------------------------------------


def test_a_message_carries_the_publishing_span_and_the_worker_continues_it(
    spans: InMemorySpanExporter,
) -> None:
    attributes = {"event_id": "e1"}
    with tracing.span("ingest.publish", root=True) as publish:
        tracing.inject(attributes)
    publishing = publish.get_span_context()
    version, trace_id, span_id, flags = attributes[tracing.TRACEPARENT].split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled (the SDK may set the "random" bit too)
    assert (int(trace_id, 16), int(span_id, 16)) == (publishing.trace_id, publishing.span_id)
    with tracing.span("worker.handle", parent=tracing.extract(attributes)) as handle:
        pass
    assert handle.get_span_context().trace_id == publishing.trace_id
    parent = by_name(spans)["worker.handle"].parent
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.is_remote) == (
        publishing.trace_id,
        publishing.span_id,
        True,
    )


@pytest.mark.parametrize(
    "carrier", [{}, {"traceparent": "garbage"}, {"traceparent": "00-" + "0" * 32 + "-1-01"}]
)
def test_a_message_without_a_valid_traceparent_starts_a_new_trace(
    spans: InMemorySpanExporter, carrier: dict[str, str]
) -> None:
    # Even inside another span: the message's own context decides, not the caller's.
    with tracing.span("webhook", root=True), tracing.span("worker.handle", parent=tracing.extract(carrier)):
        pass
    assert by_name(spans)["worker.handle"].parent is None


def test_the_webhook_span_is_always_a_new_trace(spans: InMemorySpanExporter) -> None:
    with tracing.span("outer", root=True), tracing.span("POST /api/paynow/webhook", root=True):
        pass
    assert by_name(spans)["POST /api/paynow/webhook"].parent is None


def test_sampling_follows_the_parent_whatever_the_ratio() -> None:
    exporter = _traced(ratio=0.0)
    try:
        sampled = {"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"}
        with tracing.span("worker.handle", parent=tracing.extract(sampled)) as followed:
            assert followed.is_recording()
        with tracing.span("webhook", root=True) as dropped:
            assert not dropped.is_recording()
            assert dropped.get_span_context().is_valid  # logs still carry its trace id
            attributes: dict[str, str] = {}
            tracing.inject(attributes)
        flags = int(attributes[tracing.TRACEPARENT].rsplit("-", 1)[1], 16)
        assert not flags & 1  # not sampled: the worker will not sample it either
    finally:
        tracing.uninstall()
    assert [span.name for span in exporter.get_finished_spans()] == ["worker.handle"]


async def test_the_publisher_adds_traceparent_outside_the_mac(spans: InMemorySpanExporter) -> None:
    pub, api = publisher()
    event = an_event()
    with tracing.span("ingest.publish", root=True) as publish:
        await pub.publish_event(event)
    [(_, sent)] = api.messages
    data, attributes = encode_event(event)
    assert sent.data == data
    assert sent.attributes[ATTR_EVENT_MAC] == event_mac(data, NEW)  # over the data alone, as before
    assert set(sent.attributes) == {*attributes, ATTR_EVENT_MAC, tracing.TRACEPARENT}
    assert f"{publish.get_span_context().span_id:016x}" in sent.attributes[tracing.TRACEPARENT]


async def test_without_tracing_the_message_is_as_before() -> None:
    pub, api = publisher()
    await pub.publish_event(an_event())
    [(_, sent)] = api.messages
    assert tracing.TRACEPARENT not in sent.attributes


# ---- the worker's span, transaction attempts, PointsService --------------------------------------


async def test_the_worker_span_continues_the_message_trace_with_ids_and_outcome(
    spans: InMemorySpanExporter,
) -> None:
    w = worker()
    data, attributes = message()
    attributes[tracing.TRACEPARENT] = f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"
    outcome = await w.handle(data, attributes)
    assert outcome.status == "processed"  # the extra attribute changes nothing in the checks
    handle = by_name(spans)["worker.handle"]
    assert handle.kind is SpanKind.CONSUMER
    assert handle.context.trace_id == int(REMOTE_TRACE, 16)
    assert handle.parent is not None
    assert handle.parent.span_id == int(REMOTE_SPAN, 16)
    assert handle.attributes is not None
    assert {k: handle.attributes[k] for k in (tracing.EVENT_ID, tracing.ORDERING_KEY, tracing.OUTCOME)} == {
        tracing.EVENT_ID: attributes["event_id"],
        tracing.ORDERING_KEY: attributes["ordering_key"],
        tracing.OUTCOME: "processed",
    }
    assert handle.attributes["messaging.message.id"] == "m"


async def test_each_transaction_attempt_is_a_span_with_its_number(spans: InMemorySpanExporter) -> None:
    work, _ = failing(gexc.Aborted("contention"), gexc.Aborted("contention"))
    with tracing.span("worker.handle", root=True) as handle:
        assert await runner().run(["u1"], work) == "done"
    attempts = [s for s in spans.get_finished_spans() if s.name == "firestore.transaction.attempt"]
    assert [(s.attributes or {}).get("paynow.attempt") for s in attempts] == [1, 2, 3]
    assert [(s.attributes or {}).get("paynow.retry_count") for s in attempts] == [0, 1, 2]
    assert [(s.attributes or {}).get(tracing.OUTCOME) for s in attempts] == [
        "contention",
        "contention",
        "committed",
    ]
    assert {s.parent.span_id for s in attempts if s.parent} == {handle.get_span_context().span_id}
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[0].status.description == "Aborted"  # the class only, never the message


def test_a_points_call_continues_its_caller_trace_and_keeps_messages_out(spans: InMemorySpanExporter) -> None:
    caller = {"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"}
    with rpc_span("CreditPoints", "grpc", caller) as span:
        traced_result(span, LedgerConflictError("api:someone@example.com:key1 exists with another amount"))
    [call] = spans.get_finished_spans()
    assert call.name == "paynow.points.v1.PointsService/CreditPoints"
    assert call.kind is SpanKind.SERVER
    assert call.context.trace_id == int(REMOTE_TRACE, 16)
    assert dict(call.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "paynow.points.v1.PointsService",
        "rpc.method": "CreditPoints",
        tracing.OUTCOME: "ALREADY_EXISTS",
        "error.type": "LedgerConflictError",
    }
    assert "example.com" not in json.dumps(json.loads(call.to_json()))


def test_points_calls_cost_nothing_when_off() -> None:
    with rpc_span("GetBalance", "connect_rpc", None) as span:
        traced_result(span)
        assert not span.is_recording()


# ---- log lines ----------------------------------------------------------------------------------


def test_a_line_logged_in_a_span_carries_its_trace(spans: InMemorySpanExporter) -> None:
    with tracing.span("worker.handle", root=True) as span:
        inside = _line(event_id="e1")
    context = span.get_span_context()
    assert inside[tracing.TRACE_FIELD] == f"projects/{PROJECT}/traces/{context.trace_id:032x}"
    assert inside[tracing.SPAN_FIELD] == f"{context.span_id:016x}"
    assert inside[tracing.SAMPLED_FIELD] is True
    assert inside["event_id"] == "e1"
    outside = _line()
    assert tracing.TRACE_FIELD not in outside


def test_an_error_span_names_the_class_only(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="secret"), tracing.span("outer", root=True):
        raise ValueError("buyer@example.com secret")
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert "example.com" not in span.to_json()
    assert (span.attributes or {})["error.type"] == "ValueError"


# ---- PointsService over both transports -----------------------------------------------------------

CALLER_TRACE = {"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"}


def _rpc_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {
        s.name.rsplit("/", 1)[1]: s for s in exporter.get_finished_spans() if s.name.startswith(SERVICE_NAME)
    }


async def test_grpc_calls_are_spans_in_their_caller_trace(spans: InMemorySpanExporter) -> None:
    server, _ = _server(LocalCaller(), PointsCore(MemoryLedger()))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PointsServiceStub(channel)
            metadata = tuple(CALLER_TRACE.items())
            await stub.GetBalance(pb.GetBalanceRequest(uid="u1"), metadata=metadata, timeout=10)
            request = pb.ReversePointsRequest(uid="u1", original_entry_id="api:x:1", idempotency_key="k")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ReversePoints(request, timeout=10)
    finally:
        await server.stop(None)
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    calls = _rpc_spans(spans)
    balance, reverse = calls["GetBalance"], calls["ReversePoints"]
    assert balance.context.trace_id == int(REMOTE_TRACE, 16)
    assert (balance.attributes or {})["rpc.system"] == "grpc"
    assert (balance.attributes or {})[tracing.OUTCOME] == "OK"
    assert reverse.parent is None  # no traceparent: a trace of its own
    assert (reverse.attributes or {})[tracing.OUTCOME] == "NOT_FOUND"
    assert reverse.status.status_code is StatusCode.ERROR


async def test_connect_calls_are_spans_in_their_caller_trace(spans: InMemorySpanExporter) -> None:
    path, points = build_points_asgi(Settings(), MemoryLedger(), LocalCaller())
    app = Starlette(routes=[Mount(path, app=points)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post(
            f"{path}/GetBalance",
            json={"uid": "u1"},
            headers={"content-type": "application/json", **CALLER_TRACE},
        )
    assert response.status_code == 200, response.text
    balance = _rpc_spans(spans)["GetBalance"]
    assert balance.kind is SpanKind.SERVER
    assert balance.context.trace_id == int(REMOTE_TRACE, 16)
    assert (balance.attributes or {})["rpc.system"] == "connect_rpc"
