"""Traces: one per event, from the webhook through Pub/Sub and the worker to its transaction.

The spans: the webhook request (`POST /api/paynow/webhook`), its record and its publish
(`ingest.record`, `ingest.publish`), the worker's handling of the message (`worker.handle`,
push and pull alike), each Firestore transaction attempt (`firestore.transaction.attempt`,
with its attempt number), and every PointsService call (gRPC and Connect). The publish puts
the W3C `traceparent` of its span in the message's attributes; the worker continues that
trace. `event_mac` covers the message data only, so the attribute changes no verification:
a forged `traceparent` can only misfile a trace, never credit anything.

Spans carry ids, types, ordering keys and outcomes, never PII and never an exception's
message (an entry id of an API credit holds the caller's email): a failed span gets its
exception's class name only.

`OTEL_EXPORTER` (`none` by default) picks the exporter: `gcp` (Cloud Trace), `console` (one
JSON line per span on stderr) or `file` (JSON lines appended to `TRACE_FILE`). With `none`
no SDK provider is built: every helper here returns a shared no-op at the cost of a global
read, and messages carry no `traceparent`. Sampling is parent-based at `TRACE_SAMPLE_RATIO`,
so the worker follows the webhook's decision. Log lines carry the current trace
(`logging.googleapis.com/trace`, `spanId`, `trace_sampled`) when tracing is on, sampled or
not, so Cloud Logging links them to their trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from paynow_service import logs

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    from paynow_service.config import Settings

logger = logging.getLogger("paynow_service.tracing")
TRACEPARENT = "traceparent"
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"

# Span attribute names (ids and outcomes only).
EVENT_ID = "paynow.event_id"
EVENT_TYPE = "paynow.event_type"
ORDERING_KEY = "paynow.ordering_key"
OUTCOME = "paynow.outcome"

_PROPAGATOR = TraceContextTextMapPropagator()
_OFF = contextlib.nullcontext(trace.INVALID_SPAN)
_tracer: Tracer | None = None  # None: tracing is off
_provider: TracerProvider | None = None
_project = ""


def enabled() -> bool:
    return _tracer is not None


def setup(settings: Settings, service: str) -> None:
    """Build the tracer for this process from OTEL_EXPORTER and TRACE_SAMPLE_RATIO (nothing with `none`)."""
    if settings.otel_exporter == "none":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
        resource=Resource.create({"service.name": f"paynow-service-{service}"}),
    )
    try:
        exporter = _exporter(settings)
    except Exception as err:  # noqa: BLE001 (no credentials for Cloud Trace, say: serve, untraced)
        logs.log(
            logger,
            logging.WARNING,
            "Tracing off - exporter not available",
            component="tracing",
            exporter=settings.otel_exporter,
            error_type=type(err).__name__,
        )
        return
    # Exported off the request path, in batches, by the processor's own thread.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider, settings.google_cloud_project)
    logs.log(
        logger,
        logging.INFO,
        "Tracing on",
        component="tracing",
        exporter=settings.otel_exporter,
        sample_ratio=settings.trace_sample_ratio,
    )


def _exporter(settings: Settings) -> Any:
    if settings.otel_exporter == "gcp":
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        return CloudTraceSpanExporter(project_id=settings.google_cloud_project)  # type: ignore[no-untyped-call]
    if settings.otel_exporter == "console":
        return JsonLinesExporter(2)  # stderr: stdout holds the log lines
    assert settings.trace_file is not None  # Settings refuses `file` without TRACE_FILE
    return JsonLinesExporter.to_file(settings.trace_file)


class JsonLinesExporter:
    """A SpanExporter writing one JSON object per span and line (the SDK's own `to_json`), each with
    one `write` on an append-only descriptor: processes sharing a file never interleave lines."""

    def __init__(self, fd: int, *, owned: bool = False) -> None:
        self._fd = fd
        self._owned = owned

    @classmethod
    def to_file(cls, path: Path) -> JsonLinesExporter:
        return cls(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), owned=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            for span in spans:
                os.write(self._fd, (span.to_json(indent=None) + "\n").encode())
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._owned:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._owned = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def install(provider: TracerProvider, project: str) -> None:
    """Trace with `provider` from now on (setup, and tests with an in-memory exporter)."""
    global _tracer, _provider, _project
    _tracer, _provider, _project = provider.get_tracer("paynow_service"), provider, project
    logs.set_trace_fields(log_fields)


def uninstall() -> None:
    """Tracing off again (tests): the provider exports what it holds and stops."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    logs.set_trace_fields(None)
    if provider is not None:
        provider.shutdown()


def flush() -> None:
    """Export the spans still queued (the process is ending by a path that skips exit handlers)."""
    if _provider is not None:
        _provider.force_flush(5000)


def span(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, parent: Context | None = None, root: bool = False
) -> contextlib.AbstractContextManager[Span]:
    """A span around a block, current inside it; `parent`: an extracted context, `root`: a new trace.

    Off: a shared no-op whose span records nothing (check `is_recording()` before building attributes).
    """
    if _tracer is None:
        return _OFF
    return _Traced(_tracer, name, kind, Context() if root else parent)


class _Traced:
    """The span of one block, current inside it (a class, not a generator: this runs per event)."""

    __slots__ = ("_kind", "_name", "_parent", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, name: str, kind: SpanKind, parent: Context | None) -> None:
        self._tracer, self._name, self._kind, self._parent = tracer, name, kind, parent

    def __enter__(self) -> Span:
        span = self._span = self._tracer.start_span(
            self._name,
            context=self._parent,
            kind=self._kind,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        try:
            if exc is not None and span.is_recording():
                # The class only: a message may hold what a trace must not (an API entry id's email).
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        finally:
            otel_context.detach(self._token)
            span.end()


def current_span() -> Span:
    """The span of the running code (a no-op one when tracing is off or no span is open)."""
    if _tracer is None:
        return trace.INVALID_SPAN
    return trace.get_current_span()


def inject(attributes: MutableMapping[str, str]) -> None:
    """Add the current span's `traceparent` to message attributes (nothing when off or outside a span)."""
    if _tracer is not None:
        _PROPAGATOR.inject(attributes)


def extract(carrier: Mapping[str, str] | None) -> Context | None:
    """The context a message's attributes (or a call's headers) carry: a new trace without a valid
    `traceparent`; None when tracing is off."""
    if _tracer is None or carrier is None:
        return None
    if not carrier.get(TRACEPARENT):
        return Context()
    return _PROPAGATOR.extract(carrier, context=Context())


def log_fields() -> dict[str, object]:
    """Cloud Logging's trace fields for the current span ({} outside any span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        TRACE_FIELD: f"projects/{_project}/traces/{trace.format_trace_id(context.trace_id)}",
        SPAN_FIELD: trace.format_span_id(context.span_id),
        SAMPLED_FIELD: context.trace_flags.sampled,
    }
