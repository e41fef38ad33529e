"""Settings: every environment variable the service reads, validated once at start.

`VARIABLES` is the single table of names, defaults, allowed values and the commands
that read them; the README's table is checked against it by a test. A bad value
raises `ConfigError` whose message is one line naming the variable and what is
allowed: the CLI prints it and exits before anything else can complain.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from paynow_service.domain.provenance import MIN_KEY_CHARS as MIN_SIGNING_KEY_CHARS

WebhookMode = Literal["sync", "queue"]
AuthMode = Literal["enabled", "disabled"]

ALL_ROUTES = ("webhook", "push", "points", "metrics")
# The public webhook service must never serve /metrics or PointsService: the safe default.
DEFAULT_ROUTES = ("webhook",)
LOOPBACK_HOST = "127.0.0.1"
ANY_HOST = "0.0.0.0"  # every interface: Cloud Run's front end reaches the container
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_EMULATOR_HOSTS = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


class ConfigError(ValueError):
    """A setting has a value outside what it allows (one line, names the variable)."""


@dataclass(frozen=True)
class Variable:
    """One environment variable: how it is parsed and documented."""

    name: str
    default: str
    allowed: str
    commands: str
    parse: Callable[[str, str], Any]
    attr: str


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} is not allowed: use one of {' | '.join(choices)}")
        return value

    return parse


def _int(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer: use {low}..{high}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={raw!r} is out of range: use {low}..{high}")
        return value

    return parse


def _float(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number: use {low}..{high}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={raw!r} is out of range: use {low}..{high}")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not allowed: use true | false")


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _resource_id(name: str, raw: str) -> str:
    value = raw.strip()
    # Pub/Sub ids: 3-255 characters, starting with a letter.
    if len(value) < 3 or not value[0].isalpha() or not all(c.isalnum() or c in "-_.~+%" for c in value):
        raise ConfigError(
            f"{name}={raw!r} is not a Pub/Sub id: 3+ characters, a letter first, [A-Za-z0-9-_.~+%]"
        )
    return value


def _host_port(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{name}={raw!r} is not host:port (e.g. 127.0.0.1:8085)")
    return value


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _signing_keys(name: str, raw: str) -> tuple[str, ...]:
    # A secret: no message here ever quotes the value.
    if not raw.strip():
        return ()
    keys = tuple(part.strip() for part in raw.split(","))
    if not all(keys):
        raise ConfigError(f"{name} has an empty key (a stray comma?): give a comma list of keys")
    return keys


def _routes(name: str, raw: str) -> tuple[str, ...]:
    routes = _list(name, raw)
    unknown = [r for r in routes if r not in ALL_ROUTES]
    if unknown or not routes:
        raise ConfigError(f"{name}={raw!r} is not allowed: a comma list of {', '.join(ALL_ROUTES)}")
    return routes


def _optional_path(name: str, raw: str) -> Path | None:
    value = raw.strip()
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r} is not a readable file: give the path of a TOML catalog")
    return path


def _url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r} is not an http(s) URL")
    return value


def _check_certs_url(name: str, url: str, *, on_emulators: bool) -> None:
    """ID tokens are checked against these keys: over plain http anyone on the path could swap
    them for their own. A local test server on loopback is fine on the emulators."""
    if url.lower().startswith("https://"):
        return
    if on_emulators and urlsplit(url).hostname in _LOOPBACK_NAMES:
        return
    raise ConfigError(f"{name}={url!r} is not allowed: {_CERTS_URL_ALLOWED}")


_CERTS_URL_ALLOWED = (
    "an https URL of Google's OIDC signing certs (http://127.0.0.1 or localhost only with both "
    "PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST set)"
)
_ALL = "all"
_SERVERS = "serve, dev"
VARIABLES: tuple[Variable, ...] = (
    Variable("WEBHOOK_MODE", "sync", "sync / queue", _SERVERS, _choice("sync", "queue"), "webhook_mode"),
    Variable("WEBHOOK_QUEUE_PERCENT", "100", "0..100", _SERVERS, _int(0, 100), "webhook_queue_percent"),
    Variable("PORT", "8080", "1..65535", _SERVERS, _int(1, 65535), "port"),
    Variable("GRPC_PORT", "50051", "1..65535", "grpc, dev", _int(1, 65535), "grpc_port"),
    Variable(
        "HTTP_ROUTES",
        ",".join(DEFAULT_ROUTES),
        "comma list of " + ", ".join(ALL_ROUTES) + " (`dev` mounts all)",
        _SERVERS,
        _routes,
        "http_routes",
    ),
    Variable(
        "PAYNOW_WEBHOOK_SECRETS",
        "",
        "comma list of PayNow webhook secrets",
        "serve, dev, send-test-webhook",
        _list,
        "paynow_webhook_secrets",
    ),
    Variable(
        "EVENT_SIGNING_KEYS",
        "",
        f"comma list of secret keys (the first signs), {MIN_SIGNING_KEY_CHARS}+ characters each on GCP",
        "serve, worker, sweep, dev",
        _signing_keys,
        "event_signing_keys",
    ),
    Variable(
        "PAYNOW_TIMESTAMP_TOLERANCE_S",
        "300",
        "1..86400",
        _SERVERS,
        _int(1, 86400),
        "paynow_timestamp_tolerance_s",
    ),
    Variable(
        "PAYNOW_STORE_ID", "", "a PayNow store id, or empty for any", _SERVERS, _text, "paynow_store_id"
    ),
    Variable(
        "PAYNOW_MAX_BODY_BYTES",
        "262144",
        "1024..10485760",
        _SERVERS,
        _int(1024, 10 * 1024 * 1024),
        "paynow_max_body_bytes",
    ),
    Variable(
        "GOOGLE_CLOUD_PROJECT",
        "paynow-local",
        "a Google Cloud project id",
        _ALL,
        _text,
        "google_cloud_project",
    ),
    Variable(
        "PUBSUB_EMULATOR_HOST",
        "",
        "host:port of the Pub/Sub emulator, or empty for GCP",
        _ALL,
        _host_port,
        "pubsub_emulator_host",
    ),
    Variable(
        "FIRESTORE_EMULATOR_HOST",
        "",
        "host:port of the Firestore emulator, or empty for GCP",
        _ALL,
        _host_port,
        "firestore_emulator_host",
    ),
    Variable("PUBSUB_TOPIC", "paynow-events", "a Pub/Sub topic id", _ALL, _resource_id, "pubsub_topic"),
    Variable(
        "PUBSUB_DLQ_TOPIC", "paynow-events-dlq", "a Pub/Sub topic id", _ALL, _resource_id, "pubsub_dlq_topic"
    ),
    Variable(
        "PUBSUB_SUBSCRIPTION",
        "paynow-events-sub",
        "a Pub/Sub subscription id",
        _ALL,
        _resource_id,
        "pubsub_subscription",
    ),
    Variable(
        "PUBSUB_DLQ_SUBSCRIPTION",
        "paynow-events-dlq-sub",
        "a Pub/Sub subscription id",
        _ALL,
        _resource_id,
        "pubsub_dlq_subscription",
    ),
    Variable(
        "PUBLISH_TIMEOUT_S",
        "2",
        "0.1..60 (bounded wait for a publish)",
        _SERVERS + ", sweep, dlq",
        _float(0.1, 60),
        "publish_timeout_s",
    ),
    Variable("PUBLISH_LEASE_S", "30", "1..3600", _SERVERS + ", sweep", _int(1, 3600), "publish_lease_s"),
    Variable("WEBHOOK_EVENT_TTL_DAYS", "30", "1..3650", _SERVERS, _int(1, 3650), "webhook_event_ttl_days"),
    Variable(
        "PARK_MAX_HOURS",
        "72",
        "1..8760 (a refund or dispute waits this long for its order before sweep dead-letters it)",
        "sweep",
        _int(1, 8760),
        "park_max_hours",
    ),
    Variable(
        "WORKER_PULL_MODE",
        "streaming",
        "streaming / unary (unary: repeated Pull calls; see README on the emulator)",
        "worker",
        _choice("streaming", "unary"),
        "worker_pull_mode",
    ),
    Variable(
        "MAX_DELIVERY_ATTEMPTS",
        "5",
        "5..100 (Pub/Sub's dead-letter range)",
        "serve, worker, infra, dev",
        _int(5, 100),
        "max_delivery_attempts",
    ),
    Variable(
        "FIRESTORE_TIMEOUT_S",
        "10",
        "0.5..120 (deadline of each Firestore call)",
        _ALL,
        _float(0.5, 120),
        "firestore_timeout_s",
    ),
    Variable(
        "REQUEST_DEADLINE_S",
        "30",
        "1..600 (every HTTP answer comes within this; past it: 503, nothing assumed durable)",
        "serve, dev",
        _float(1, 600),
        "request_deadline_s",
    ),
    Variable(
        "ALLOW_NEGATIVE_BALANCE",
        "true",
        "true / false",
        "serve, worker, grpc, dev",
        _bool,
        "allow_negative_balance",
    ),
    Variable(
        "PUSH_AUTH",
        "enabled",
        "enabled / disabled (disabled only with PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST set; "
        "the process then listens on 127.0.0.1 only)",
        _SERVERS,
        _choice("enabled", "disabled"),
        "push_auth",
    ),
    Variable("PUSH_AUDIENCE", "", "the push subscription's OIDC audience", _SERVERS, _text, "push_audience"),
    Variable(
        "PUSH_SERVICE_ACCOUNT",
        "",
        "email of the push subscription's service account",
        _SERVERS,
        _text,
        "push_service_account",
    ),
    Variable(
        "PUSH_CERTS_URL",
        GOOGLE_CERTS_URL,
        _CERTS_URL_ALLOWED,
        _SERVERS,
        _url,
        "push_certs_url",
    ),
    Variable(
        "PUSH_CERTS_GRACE_S",
        "30",
        "1..600 (a cold start without signing certs answers 503 this long, then reports not ready;"
        " PointsService auth too)",
        "serve, grpc, dev",
        _float(1, 600),
        "push_certs_grace_s",
    ),
    Variable(
        "POINTS_AUTH",
        "enabled",
        "enabled / disabled (disabled only with PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST set; "
        "the process then listens on 127.0.0.1 only)",
        "serve, grpc, dev",
        _choice("enabled", "disabled"),
        "points_auth",
    ),
    Variable(
        "POINTS_AUDIENCE",
        "",
        "the ID-token audience PointsService expects",
        "serve, grpc, dev",
        _text,
        "points_audience",
    ),
    Variable(
        "POINTS_ALLOWED_CALLERS",
        "",
        "comma list of caller emails",
        "serve, grpc, dev",
        _list,
        "points_allowed_callers",
    ),
    Variable(
        "POINTS_CERTS_URL",
        GOOGLE_CERTS_URL,
        _CERTS_URL_ALLOWED,
        "serve, grpc, dev",
        _url,
        "points_certs_url",
    ),
    Variable(
        "PRODUCT_CATALOG",
        "",
        "path of the TOML product catalog",
        "serve, worker, dev",
        _optional_path,
        "product_catalog",
    ),
    Variable(
        "LOG_LEVEL",
        "INFO",
        "DEBUG / INFO / WARNING / ERROR",
        _ALL,
        lambda n, r: _choice("debug", "info", "warning", "error")(n, r).upper(),
        "log_level",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The validated configuration, read once and passed down explicitly."""

    webhook_mode: WebhookMode = "sync"
    webhook_queue_percent: int = 100
    port: int = 8080
    grpc_port: int = 50051
    http_routes: tuple[str, ...] = DEFAULT_ROUTES
    paynow_webhook_secrets: tuple[str, ...] = ()
    event_signing_keys: tuple[str, ...] = field(default=(), repr=False)
    paynow_timestamp_tolerance_s: int = 300
    paynow_store_id: str = ""
    paynow_max_body_bytes: int = 262144
    google_cloud_project: str = "paynow-local"
    pubsub_emulator_host: str = ""
    firestore_emulator_host: str = ""
    pubsub_topic: str = "paynow-events"
    pubsub_dlq_topic: str = "paynow-events-dlq"
    pubsub_subscription: str = "paynow-events-sub"
    pubsub_dlq_subscription: str = "paynow-events-dlq-sub"
    publish_timeout_s: float = 2.0
    publish_lease_s: int = 30
    webhook_event_ttl_days: int = 30
    park_max_hours: int = 72
    worker_pull_mode: str = "streaming"
    max_delivery_attempts: int = 5
    firestore_timeout_s: float = 10.0
    request_deadline_s: float = 30.0
    allow_negative_balance: bool = True
    push_auth: AuthMode = "enabled"
    push_audience: str = ""
    push_service_account: str = ""
    push_certs_url: str = GOOGLE_CERTS_URL
    push_certs_grace_s: float = 30.0
    points_auth: AuthMode = "enabled"
    points_audience: str = ""
    points_allowed_callers: tuple[str, ...] = ()
    points_certs_url: str = GOOGLE_CERTS_URL
    product_catalog: Path | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate every variable; the first bad one raises ConfigError."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = env.get(var.name)
            values[var.attr] = var.parse(var.name, var.default if raw is None else raw)
        settings = cls(**values)
        settings._check_combinations()
        return settings

    def _check_combinations(self) -> None:
        # With one emulator host only, the other client talks to real GCP: a disabled auth there
        # would open production data to anyone who reaches the port.
        unset = [name for name in _EMULATOR_HOSTS if not getattr(self, name.lower())]
        for name in self.disabled_auths:
            if unset:
                raise ConfigError(
                    f"{name}=disabled is allowed only on the local emulators: {unset[0]} is not set "
                    "(both PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST are required)"
                )
        _check_certs_url("PUSH_CERTS_URL", self.push_certs_url, on_emulators=not unset)
        _check_certs_url("POINTS_CERTS_URL", self.points_certs_url, on_emulators=not unset)
        # A weak key lets a guesser sign events: on GCP every key must be long; the local
        # emulators take any non-empty key.
        if not self.pubsub_emulator_host and any(
            len(key) < MIN_SIGNING_KEY_CHARS for key in self.event_signing_keys
        ):
            raise ConfigError(
                f"EVENT_SIGNING_KEYS has a key shorter than {MIN_SIGNING_KEY_CHARS} characters "
                "(allowed only with PUBSUB_EMULATOR_HOST set)"
            )

    def require(self, *names: str) -> None:
        """Refuse to start a command that needs variables left empty (one line each)."""
        for name in names:
            var = next(v for v in VARIABLES if v.name == name)
            if not getattr(self, var.attr):
                raise ConfigError(f"{name} is required by this command: {var.allowed}")

    @property
    def disabled_auths(self) -> tuple[str, ...]:
        """The auth variables set to `disabled` (local emulators only)."""
        modes = (("PUSH_AUTH", self.push_auth), ("POINTS_AUTH", self.points_auth))
        return tuple(name for name, mode in modes if mode == "disabled")

    @property
    def listen_host(self) -> str:
        """Where servers bind: loopback only while an auth is disabled (SPEC 3), else everywhere."""
        return LOOPBACK_HOST if self.disabled_auths else ANY_HOST

    @property
    def on_emulators(self) -> bool:
        return bool(self.pubsub_emulator_host or self.firestore_emulator_host)

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.google_cloud_project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.google_cloud_project}/subscriptions/{subscription}"
