"""Settings: every environment variable the service reads, validated once at start.

`VARIABLES` (config_variables.py) is the single table of names, defaults, allowed values
and the commands that read them; `Settings` takes its field defaults from it. A bad value
raises `ConfigError` whose message is one line naming the variable and what is allowed:
the CLI prints it and exits before anything else can complain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from paynow_service.config_variables import ALL_ROUTES as ALL_ROUTES
from paynow_service.config_variables import CERTS_URL_ALLOWED, default_of, variable
from paynow_service.config_variables import DEFAULT_ROUTES as DEFAULT_ROUTES
from paynow_service.config_variables import GOOGLE_CERTS_URL as GOOGLE_CERTS_URL
from paynow_service.config_variables import VARIABLES as VARIABLES
from paynow_service.config_variables import Variable as Variable
from paynow_service.domain.errors import ConfigError as ConfigError
from paynow_service.domain.provenance import MIN_KEY_CHARS as MIN_SIGNING_KEY_CHARS

WebhookMode = Literal["sync", "queue"]
AuthMode = Literal["enabled", "disabled"]

LOOPBACK_HOST = "127.0.0.1"
ANY_HOST = "0.0.0.0"  # every interface: Cloud Run's front end reaches the container
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_EMULATOR_HOSTS = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")


@dataclass(frozen=True)
class Settings:
    """The validated configuration, read once and passed down explicitly.

    Every default comes from the variable's row in `VARIABLES` (`default_of`)."""

    webhook_mode: WebhookMode = default_of("webhook_mode")  # noqa: RUF009 (a str or a Path: immutable)
    webhook_queue_percent: int = default_of("webhook_queue_percent")
    port: int = default_of("port")
    grpc_port: int = default_of("grpc_port")
    http_routes: tuple[str, ...] = default_of("http_routes")
    paynow_webhook_secrets: tuple[str, ...] = default_of("paynow_webhook_secrets")
    event_signing_keys: tuple[str, ...] = field(default=default_of("event_signing_keys"), repr=False)
    paynow_timestamp_tolerance_s: int = default_of("paynow_timestamp_tolerance_s")
    paynow_store_id: str = default_of("paynow_store_id")
    paynow_max_body_bytes: int = default_of("paynow_max_body_bytes")
    google_cloud_project: str = default_of("google_cloud_project")
    pubsub_emulator_host: str = default_of("pubsub_emulator_host")
    firestore_emulator_host: str = default_of("firestore_emulator_host")
    pubsub_topic: str = default_of("pubsub_topic")
    pubsub_dlq_topic: str = default_of("pubsub_dlq_topic")
    pubsub_subscription: str = default_of("pubsub_subscription")
    pubsub_dlq_subscription: str = default_of("pubsub_dlq_subscription")
    publish_timeout_s: float = default_of("publish_timeout_s")
    publish_lease_s: int = default_of("publish_lease_s")
    webhook_event_ttl_days: int = default_of("webhook_event_ttl_days")
    park_max_hours: int = default_of("park_max_hours")
    worker_pull_mode: str = default_of("worker_pull_mode")
    max_delivery_attempts: int = default_of("max_delivery_attempts")
    firestore_timeout_s: float = default_of("firestore_timeout_s")
    request_deadline_s: float = default_of("request_deadline_s")
    allow_negative_balance: bool = default_of("allow_negative_balance")
    push_auth: AuthMode = default_of("push_auth")  # noqa: RUF009 (a str or a Path: immutable)
    push_audience: str = default_of("push_audience")
    push_service_account: str = default_of("push_service_account")
    push_certs_url: str = default_of("push_certs_url")
    push_certs_grace_s: float = default_of("push_certs_grace_s")
    points_auth: AuthMode = default_of("points_auth")  # noqa: RUF009 (a str or a Path: immutable)
    points_audience: str = default_of("points_audience")
    points_allowed_callers: tuple[str, ...] = default_of("points_allowed_callers")
    points_certs_url: str = default_of("points_certs_url")
    console_operators: tuple[str, ...] = default_of("console_operators")
    console_audience: str = default_of("console_audience")
    console_certs_url: str = default_of("console_certs_url")
    product_catalog: Path | None = default_of("product_catalog")  # noqa: RUF009 (a str or a Path: immutable)
    otel_exporter: str = default_of("otel_exporter")
    trace_sample_ratio: float = default_of("trace_sample_ratio")
    trace_file: Path | None = default_of("trace_file")  # noqa: RUF009 (a str or a Path: immutable)
    log_level: str = default_of("log_level")

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
        if self.otel_exporter == "file" and self.trace_file is None:
            raise ConfigError("OTEL_EXPORTER=file needs TRACE_FILE: the path spans are appended to")
        _check_certs_url("PUSH_CERTS_URL", self.push_certs_url, on_emulators=not unset)
        _check_certs_url("POINTS_CERTS_URL", self.points_certs_url, on_emulators=not unset)
        _check_certs_url("CONSOLE_CERTS_URL", self.console_certs_url, on_emulators=not unset)
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
            var = variable(name)
            if not getattr(self, var.attr):
                raise ConfigError(f"{name} is required by this command: {var.allowed}")

    @property
    def disabled_auths(self) -> tuple[str, ...]:
        """The auth variables set to `disabled` (local emulators only), and CONSOLE_OPERATORS when the
        console is served open (`console_open`)."""
        modes = (("PUSH_AUTH", self.push_auth), ("POINTS_AUTH", self.points_auth))
        disabled = tuple(name for name, mode in modes if mode == "disabled")
        return (*disabled, "CONSOLE_OPERATORS") if self.console_open else disabled

    @property
    def console_open(self) -> bool:
        """The console without sign-in: served, no operator listed, on both local emulators (what
        `paynow-service dev` runs on). Anywhere else a console needs CONSOLE_OPERATORS."""
        both_emulators = bool(self.pubsub_emulator_host and self.firestore_emulator_host)
        return "console" in self.http_routes and not self.console_operators and both_emulators

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


def _check_certs_url(name: str, url: str, *, on_emulators: bool) -> None:
    """ID tokens are checked against these keys: over plain http anyone on the path could swap
    them for their own. A local test server on loopback is fine on the emulators."""
    if url.lower().startswith("https://"):
        return
    if on_emulators and urlsplit(url).hostname in _LOOPBACK_NAMES:
        return
    raise ConfigError(f"{name}={url!r} is not allowed: {CERTS_URL_ALLOWED}")
