"""The Pub/Sub topology of SPEC section 4, as data: what should exist.

`desired_topology()` states the topics and subscriptions (the main subscription ordered,
with its dead-letter topic and retry back-off); `Change` is one difference between that and
what exists. adapters/pubsub_infra.py reads what exists and carries the changes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paynow_service.config import Settings

DAY = 24 * 3600
# The emulator still enforces Pub/Sub's old 7-day ceiling on subscription retention
# (GCP allows 31 days): there the DLQ subscription keeps 7 days instead of 14.
EMULATOR_MAX_SUBSCRIPTION_RETENTION_S = 7 * DAY


@dataclass(frozen=True)
class InfraOverrides:
    """Values tests shorten to stay fast; None keeps the design's value."""

    ack_deadline_s: int | None = None
    min_backoff_s: int | None = None
    max_backoff_s: int | None = None
    push_endpoint: str | None = None
    # Switching an existing push subscription to pull must be asked for explicitly:
    # without --push-endpoint or --pull, apply leaves the delivery type as it is.
    pull: bool = False


@dataclass(frozen=True)
class TopicSpec:
    topic_id: str
    retention_s: int


@dataclass(frozen=True)
class SubscriptionSpec:
    subscription_id: str
    topic_id: str
    ack_deadline_s: int
    retention_s: int
    ordering: bool
    dead_letter_topic_id: str | None = None
    max_delivery_attempts: int = 0
    min_backoff_s: int | None = None
    max_backoff_s: int | None = None
    push_endpoint: str | None = ""  # None: keep the existing delivery type (push or pull)
    push_service_account: str = ""
    push_audience: str = ""


@dataclass(frozen=True)
class Change:
    """One difference between what exists and what should."""

    resource: str
    action: str  # "create", "update", "blocked"
    details: tuple[str, ...] = ()

    def describe(self) -> str:
        head = f"{self.action:7} {self.resource}"
        return head + "".join(f"\n          {d}" for d in self.details)


@dataclass
class Topology:
    topics: list[TopicSpec] = field(default_factory=list)
    subscriptions: list[SubscriptionSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def desired_topology(settings: Settings, overrides: InfraOverrides | None = None) -> Topology:
    """SPEC section 4: topic 7 days, DLQ 14 days, ordered subscription with DLQ and backoff."""
    o = overrides or InfraOverrides()
    main = SubscriptionSpec(
        subscription_id=settings.pubsub_subscription,
        topic_id=settings.pubsub_topic,
        ack_deadline_s=o.ack_deadline_s or 600,
        retention_s=7 * DAY,
        ordering=True,
        dead_letter_topic_id=settings.pubsub_dlq_topic,
        max_delivery_attempts=settings.max_delivery_attempts,
        min_backoff_s=o.min_backoff_s if o.min_backoff_s is not None else 10,
        max_backoff_s=o.max_backoff_s if o.max_backoff_s is not None else 600,
        push_endpoint=o.push_endpoint or ("" if o.pull else None),
        push_service_account=settings.push_service_account if o.push_endpoint else "",
        push_audience=(settings.push_audience or (o.push_endpoint or "")) if o.push_endpoint else "",
    )
    notes: list[str] = []
    dlq_retention_s = 14 * DAY
    if settings.pubsub_emulator_host:
        dlq_retention_s = EMULATOR_MAX_SUBSCRIPTION_RETENTION_S
        notes.append("emulator: DLQ subscription retention capped at 7 d (its ceiling); 14 d on GCP")
    dlq = SubscriptionSpec(
        subscription_id=settings.pubsub_dlq_subscription,
        topic_id=settings.pubsub_dlq_topic,
        ack_deadline_s=60,
        retention_s=dlq_retention_s,
        ordering=False,
    )
    return Topology(
        topics=[TopicSpec(settings.pubsub_topic, 7 * DAY), TopicSpec(settings.pubsub_dlq_topic, 14 * DAY)],
        subscriptions=[main, dlq],
        notes=notes,
    )


def describe_spec(spec: SubscriptionSpec) -> tuple[str, ...]:
    lines = [
        f"topic {spec.topic_id}, ack deadline {spec.ack_deadline_s} s, retention {spec.retention_s // DAY} d,"
        f" ordering {'on' if spec.ordering else 'off'}"
    ]
    if spec.dead_letter_topic_id:
        lines.append(
            f"dead letters to {spec.dead_letter_topic_id} after {spec.max_delivery_attempts} attempts"
        )
    if spec.min_backoff_s is not None:
        lines.append(f"retry backoff {spec.min_backoff_s}-{spec.max_backoff_s} s")
    lines.append(f"push to {spec.push_endpoint}" if spec.push_endpoint else "pull")
    return tuple(lines)
