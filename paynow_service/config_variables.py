"""The table of every environment variable the service reads: `VARIABLES`.

One row per variable: its name, its default (written here only: `Settings` takes its field
defaults from this table), what it allows, the commands that read it, how it is parsed and
the `Settings` attribute it fills. The README's table is checked against it by a test
(scripts/env_table.py prints it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paynow_service import config_parsers as p
from paynow_service.domain.provenance import MIN_KEY_CHARS as MIN_SIGNING_KEY_CHARS

ALL_ROUTES = ("webhook", "push", "points", "metrics", "console")
# The public webhook service must never serve /metrics or PointsService: the safe default.
DEFAULT_ROUTES = ("webhook",)
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
# The audience of `gcloud auth print-identity-token` for a user account (the Cloud SDK's client id):
# what an operator signing in to the console with their own Google account has at hand.
GCLOUD_CLIENT_AUDIENCE = "32555940559.apps.googleusercontent.com"
CERTS_URL_ALLOWED = (
    "an https URL of Google's OIDC signing certs (http://127.0.0.1 or localhost only with both "
    "PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST set)"
)


@dataclass(frozen=True)
class Variable:
    """One environment variable: how it is parsed and documented."""

    name: str
    default: str
    allowed: str
    commands: str
    parse: Callable[[str, str], Any]
    attr: str


_ALL = "all"
_SERVERS = "serve, dev"
_TRACED = "serve, grpc, worker, dev"
VARIABLES: tuple[Variable, ...] = (
    Variable("WEBHOOK_MODE", "sync", "sync / queue", _SERVERS, p.choice("sync", "queue"), "webhook_mode"),
    Variable("WEBHOOK_QUEUE_PERCENT", "100", "0..100", _SERVERS, p.integer(0, 100), "webhook_queue_percent"),
    Variable("PORT", "8080", "1..65535", _SERVERS, p.integer(1, 65535), "port"),
    Variable("GRPC_PORT", "50051", "1..65535", "grpc, dev", p.integer(1, 65535), "grpc_port"),
    Variable(
        "HTTP_ROUTES",
        ",".join(DEFAULT_ROUTES),
        "comma list of " + ", ".join(ALL_ROUTES) + " (`dev` mounts all)",
        _SERVERS,
        p.routes(ALL_ROUTES),
        "http_routes",
    ),
    Variable(
        "PAYNOW_WEBHOOK_SECRETS",
        "",
        "comma list of PayNow webhook secrets",
        "serve, dev, send-test-webhook",
        p.comma_list,
        "paynow_webhook_secrets",
    ),
    Variable(
        "EVENT_SIGNING_KEYS",
        "",
        f"comma list of secret keys (the first signs), {MIN_SIGNING_KEY_CHARS}+ characters each on GCP",
        "serve, worker, sweep, dev",
        p.signing_keys,
        "event_signing_keys",
    ),
    Variable(
        "PAYNOW_TIMESTAMP_TOLERANCE_S",
        "300",
        "1..86400",
        _SERVERS,
        p.integer(1, 86400),
        "paynow_timestamp_tolerance_s",
    ),
    Variable(
        "PAYNOW_STORE_ID", "", "a PayNow store id, or empty for any", _SERVERS, p.text, "paynow_store_id"
    ),
    Variable(
        "PAYNOW_MAX_BODY_BYTES",
        "262144",
        "1024..10485760",
        _SERVERS,
        p.integer(1024, 10 * 1024 * 1024),
        "paynow_max_body_bytes",
    ),
    Variable(
        "GOOGLE_CLOUD_PROJECT",
        "paynow-local",
        "a Google Cloud project id",
        _ALL,
        p.text,
        "google_cloud_project",
    ),
    Variable(
        "PUBSUB_EMULATOR_HOST",
        "",
        "host:port of the Pub/Sub emulator, or empty for GCP",
        _ALL,
        p.host_port,
        "pubsub_emulator_host",
    ),
    Variable(
        "FIRESTORE_EMULATOR_HOST",
        "",
        "host:port of the Firestore emulator, or empty for GCP",
        _ALL,
        p.host_port,
        "firestore_emulator_host",
    ),
    Variable("PUBSUB_TOPIC", "paynow-events", "a Pub/Sub topic id", _ALL, p.resource_id, "pubsub_topic"),
    Variable(
        "PUBSUB_DLQ_TOPIC", "paynow-events-dlq", "a Pub/Sub topic id", _ALL, p.resource_id, "pubsub_dlq_topic"
    ),
    Variable(
        "PUBSUB_SUBSCRIPTION",
        "paynow-events-sub",
        "a Pub/Sub subscription id",
        _ALL,
        p.resource_id,
        "pubsub_subscription",
    ),
    Variable(
        "PUBSUB_DLQ_SUBSCRIPTION",
        "paynow-events-dlq-sub",
        "a Pub/Sub subscription id",
        _ALL,
        p.resource_id,
        "pubsub_dlq_subscription",
    ),
    Variable(
        "PUBLISH_TIMEOUT_S",
        "2",
        "0.1..60 (bounded wait for a publish)",
        _SERVERS + ", sweep, dlq",
        p.number(0.1, 60),
        "publish_timeout_s",
    ),
    Variable("PUBLISH_LEASE_S", "30", "1..3600", _SERVERS + ", sweep", p.integer(1, 3600), "publish_lease_s"),
    Variable(
        "WEBHOOK_EVENT_TTL_DAYS", "30", "1..3650", _SERVERS, p.integer(1, 3650), "webhook_event_ttl_days"
    ),
    Variable(
        "PARK_MAX_HOURS",
        "72",
        "1..8760 (a refund or dispute waits this long for its order before sweep dead-letters it)",
        "sweep",
        p.integer(1, 8760),
        "park_max_hours",
    ),
    Variable(
        "WORKER_PULL_MODE",
        "streaming",
        "streaming / unary (unary: repeated Pull calls; see README on the emulator)",
        "worker",
        p.choice("streaming", "unary"),
        "worker_pull_mode",
    ),
    Variable(
        "MAX_DELIVERY_ATTEMPTS",
        "5",
        "5..100 (Pub/Sub's dead-letter range)",
        "serve, worker, infra, dev",
        p.integer(5, 100),
        "max_delivery_attempts",
    ),
    Variable(
        "FIRESTORE_TIMEOUT_S",
        "10",
        "0.5..120 (deadline of each Firestore call)",
        _ALL,
        p.number(0.5, 120),
        "firestore_timeout_s",
    ),
    Variable(
        "REQUEST_DEADLINE_S",
        "30",
        "1..600 (every HTTP answer comes within this; past it: 503, nothing assumed durable)",
        "serve, dev",
        p.number(1, 600),
        "request_deadline_s",
    ),
    Variable(
        "ALLOW_NEGATIVE_BALANCE",
        "true",
        "true / false",
        "serve, worker, grpc, dev",
        p.boolean,
        "allow_negative_balance",
    ),
    Variable(
        "PUSH_AUTH",
        "enabled",
        "enabled / disabled (disabled only with PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST set; "
        "the process then listens on 127.0.0.1 only)",
        _SERVERS,
        p.choice("enabled", "disabled"),
        "push_auth",
    ),
    Variable("PUSH_AUDIENCE", "", "the push subscription's OIDC audience", _SERVERS, p.text, "push_audience"),
    Variable(
        "PUSH_SERVICE_ACCOUNT",
        "",
        "email of the push subscription's service account",
        _SERVERS,
        p.text,
        "push_service_account",
    ),
    Variable(
        "PUSH_CERTS_URL",
        GOOGLE_CERTS_URL,
        CERTS_URL_ALLOWED,
        _SERVERS,
        p.url,
        "push_certs_url",
    ),
    Variable(
        "PUSH_CERTS_GRACE_S",
        "30",
        "1..600 (a cold start without signing certs answers 503 this long, then reports not ready;"
        " PointsService auth too)",
        "serve, grpc, dev",
        p.number(1, 600),
        "push_certs_grace_s",
    ),
    Variable(
        "POINTS_AUTH",
        "enabled",
        "enabled / disabled (disabled only with PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST set; "
        "the process then listens on 127.0.0.1 only)",
        "serve, grpc, dev",
        p.choice("enabled", "disabled"),
        "points_auth",
    ),
    Variable(
        "POINTS_AUDIENCE",
        "",
        "the ID-token audience PointsService expects",
        "serve, grpc, dev",
        p.text,
        "points_audience",
    ),
    Variable(
        "POINTS_ALLOWED_CALLERS",
        "",
        "comma list of caller emails",
        "serve, grpc, dev",
        p.comma_list,
        "points_allowed_callers",
    ),
    Variable(
        "POINTS_CERTS_URL",
        GOOGLE_CERTS_URL,
        CERTS_URL_ALLOWED,
        "serve, grpc, dev",
        p.url,
        "points_certs_url",
    ),
    Variable(
        "CONSOLE_OPERATORS",
        "",
        "comma list of operator emails allowed in the console (required with HTTP_ROUTES console, "
        "except on the local emulators: without it there the console is open, on 127.0.0.1 only)",
        _SERVERS,
        p.comma_list,
        "console_operators",
    ),
    Variable(
        "CONSOLE_AUDIENCE",
        GCLOUD_CLIENT_AUDIENCE,
        "the ID-token audience the console expects (default: that of `gcloud auth print-identity-token`)",
        _SERVERS,
        p.text,
        "console_audience",
    ),
    Variable(
        "CONSOLE_CERTS_URL",
        GOOGLE_CERTS_URL,
        CERTS_URL_ALLOWED,
        _SERVERS,
        p.url,
        "console_certs_url",
    ),
    Variable(
        "PRODUCT_CATALOG",
        "",
        "path of the TOML product catalog",
        "serve, worker, dev",
        p.optional_path,
        "product_catalog",
    ),
    Variable(
        "OTEL_EXPORTER",
        "none",
        "none / gcp / console / file (gcp: Cloud Trace; console: a JSON line per span on stderr; "
        "file: JSON lines appended to TRACE_FILE; none: no tracing at all)",
        _TRACED,
        p.choice("none", "gcp", "console", "file"),
        "otel_exporter",
    ),
    Variable(
        "TRACE_SAMPLE_RATIO",
        "0.1",
        "0..1 (the share of webhooks and PointsService calls traced; the worker follows the webhook)",
        _TRACED,
        p.number(0, 1),
        "trace_sample_ratio",
    ),
    Variable(
        "TRACE_FILE",
        "",
        "path spans are appended to with OTEL_EXPORTER=file (debugging, tests)",
        _TRACED,
        p.output_path,
        "trace_file",
    ),
    Variable(
        "LOG_LEVEL",
        "INFO",
        "DEBUG / INFO / WARNING / ERROR",
        _ALL,
        p.upper_choice("debug", "info", "warning", "error"),
        "log_level",
    ),
)


def variable(name: str) -> Variable:
    """The row of the variable called `name`."""
    return next(var for var in VARIABLES if var.name == name)


def default_of(attr: str) -> Any:
    """The parsed default of the `Settings` attribute `attr` (the dataclass's field default)."""
    var = next(var for var in VARIABLES if var.attr == attr)
    return var.parse(var.name, var.default)
