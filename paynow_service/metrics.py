"""Prometheus metrics (served on GET /metrics when HTTP_ROUTES has `metrics`).

Counters and histograms are process-wide; each Cloud Run instance is scraped (or its
logs feed the log-based metrics of infra/monitoring). Labels stay low-cardinality:
codes, modes, outcomes and reasons, never ids.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

WEBHOOK_RESPONSES = Counter(
    "paynow_webhook_responses_total",
    "Webhook answers by HTTP code, mode and outcome",
    ["code", "mode", "outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "paynow_webhook_latency_seconds", "Webhook answer latency", ["mode"], buckets=_LATENCY_BUCKETS
)
PUBLISH_LATENCY = Histogram(
    "paynow_publish_latency_seconds", "Pub/Sub publish latency", buckets=_LATENCY_BUCKETS
)
PUBLISH_FAILURES = Counter("paynow_publish_failures_total", "Publishes that failed or timed out")
FALLBACKS = Counter("paynow_inline_fallbacks_total", "Events processed inline because the publish failed")
REDRIVEN = Counter(
    "paynow_stranded_events_republished_total", "Stranded queued events published on redelivery"
)
WORKER_OUTCOMES = Counter(
    "paynow_worker_outcomes_total", "Processing outcomes by component", ["component", "outcome"]
)
PROCESSING_LATENCY = Histogram(
    "paynow_processing_latency_seconds", "Event processing latency", ["component"], buckets=_LATENCY_BUCKETS
)
POINTS = Counter("paynow_points_total", "Points moved by events", ["direction"])
DEAD_LETTERS = Counter("paynow_dead_letters_total", "Events dead-lettered", ["reason", "error_class"])
OIDC_CERTS_FETCHES = Counter(
    "paynow_oidc_certs_fetches_total", "Fetches of Google's OIDC signing certs by result", ["result"]
)
LOG_LINES_DROPPED = Counter(
    "paynow_log_lines_dropped_total", "Log lines dropped because stdout fell behind (the log queue was full)"
)
REQUESTS_NOT_DURABLE = Counter(
    "paynow_requests_not_durable_total",
    "HTTP requests answered 503 by the request guard (past the deadline, or an unexpected error)",
    ["cause"],
)


def observe_outcome(component: str, outcome: str, processing_ms: float, points: int) -> None:
    WORKER_OUTCOMES.labels(component, outcome).inc()
    PROCESSING_LATENCY.labels(component).observe(processing_ms / 1000)
    if points > 0:
        POINTS.labels("credited").inc(points)
    elif points < 0:
        POINTS.labels("reversed").inc(-points)


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
