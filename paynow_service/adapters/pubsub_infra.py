"""Pub/Sub topology: the topics and subscriptions of SPEC section 4, created or fixed idempotently.

`desired_topology()` (adapters/pubsub_topology.py) states what should exist; `plan()`
compares it with what does and returns the changes; `apply()` carries them out. The same
code runs against the emulator and GCP (the client libraries find the emulator through
PUBSUB_EMULATOR_HOST).
Message ordering can only be chosen at creation: a subscription whose ordering differs
is reported and left alone, never deleted and recreated (that would drop its backlog).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
from google.protobuf import duration_pb2, field_mask_pb2
from google.pubsub_v1 import types

from paynow_service.adapters.pubsub_topology import DAY, describe_spec
from paynow_service.adapters.pubsub_topology import (
    EMULATOR_MAX_SUBSCRIPTION_RETENTION_S as EMULATOR_MAX_SUBSCRIPTION_RETENTION_S,
)
from paynow_service.adapters.pubsub_topology import Change as Change
from paynow_service.adapters.pubsub_topology import InfraOverrides as InfraOverrides
from paynow_service.adapters.pubsub_topology import SubscriptionSpec as SubscriptionSpec
from paynow_service.adapters.pubsub_topology import TopicSpec as TopicSpec
from paynow_service.adapters.pubsub_topology import Topology as Topology
from paynow_service.adapters.pubsub_topology import desired_topology as desired_topology
from paynow_service.config import Settings


def _duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


def _seconds(value: Any) -> int:
    """Durations come back as timedelta (proto-plus) or Duration; None when unset."""
    if value is None:
        return 0
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    return int(getattr(value, "seconds", 0))


class PubSubInfra:
    """Reads and writes the topology through the Pub/Sub admin API."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._publisher = PublisherClient()
        self._subscriber = SubscriberClient()

    def close(self) -> None:
        self._subscriber.close()

    # -- reading -----------------------------------------------------------------------------
    def _topic_path(self, topic_id: str) -> str:
        return self._settings.topic_path(topic_id)

    def _subscription_path(self, subscription_id: str) -> str:
        return self._settings.subscription_path(subscription_id)

    def get_subscription(self, subscription_id: str) -> types.Subscription | None:
        try:
            sub: types.Subscription = self._subscriber.get_subscription(
                subscription=self._subscription_path(subscription_id)
            )
            return sub
        except gexc.NotFound:
            return None

    def _get_topic(self, topic_id: str) -> types.Topic | None:
        try:
            topic: types.Topic = self._publisher.get_topic(topic=self._topic_path(topic_id))
            return topic
        except gexc.NotFound:
            return None

    # -- planning ----------------------------------------------------------------------------
    def plan(self, topology: Topology) -> list[Change]:
        changes: list[Change] = []
        for topic in topology.topics:
            existing = self._get_topic(topic.topic_id)
            name = f"topic {topic.topic_id}"
            if existing is None:
                changes.append(Change(name, "create", (f"retention {topic.retention_s // DAY} d",)))
            elif _seconds(existing.message_retention_duration) != topic.retention_s:
                have = _seconds(existing.message_retention_duration)
                changes.append(
                    Change(name, "update", (f"message_retention_duration {have}s -> {topic.retention_s}s",))
                )
        for spec in topology.subscriptions:
            existing_sub = self.get_subscription(spec.subscription_id)
            name = f"subscription {spec.subscription_id}"
            if existing_sub is None:
                changes.append(Change(name, "create", describe_spec(spec)))
                continue
            if bool(existing_sub.enable_message_ordering) != spec.ordering:
                changes.append(
                    Change(
                        name,
                        "blocked",
                        (
                            f"enable_message_ordering is {existing_sub.enable_message_ordering},"
                            f" should be {spec.ordering};"
                            " it cannot change after creation and this tool never recreates a subscription"
                            " (that would drop its backlog): see docs/runbook.md",
                        ),
                    )
                )
            diffs = self._subscription_diffs(spec, existing_sub)
            if diffs:
                changes.append(
                    Change(name, "update", tuple(f"{p}: {have} -> {want}" for p, have, want in diffs))
                )
        return changes

    def _subscription_diffs(
        self, spec: SubscriptionSpec, sub: types.Subscription
    ) -> list[tuple[str, Any, Any]]:
        diffs: list[tuple[str, Any, Any]] = []

        def compare(path: str, have: Any, want: Any) -> None:
            if have != want:
                diffs.append((path, have, want))

        compare("ack_deadline_seconds", sub.ack_deadline_seconds, spec.ack_deadline_s)
        compare("message_retention_duration", _seconds(sub.message_retention_duration), spec.retention_s)
        want_dlq = self._topic_path(spec.dead_letter_topic_id) if spec.dead_letter_topic_id else ""
        compare("dead_letter_policy.dead_letter_topic", sub.dead_letter_policy.dead_letter_topic, want_dlq)
        if spec.dead_letter_topic_id:
            compare(
                "dead_letter_policy.max_delivery_attempts",
                sub.dead_letter_policy.max_delivery_attempts,
                spec.max_delivery_attempts,
            )
        if spec.min_backoff_s is not None:
            compare(
                "retry_policy.minimum_backoff", _seconds(sub.retry_policy.minimum_backoff), spec.min_backoff_s
            )
            compare(
                "retry_policy.maximum_backoff", _seconds(sub.retry_policy.maximum_backoff), spec.max_backoff_s
            )
        if spec.push_endpoint is not None:
            compare("push_config.push_endpoint", sub.push_config.push_endpoint, spec.push_endpoint)
        if spec.push_endpoint and spec.push_service_account:
            compare(
                "push_config.oidc_token.service_account_email",
                sub.push_config.oidc_token.service_account_email,
                spec.push_service_account,
            )
            compare(
                "push_config.oidc_token.audience", sub.push_config.oidc_token.audience, spec.push_audience
            )
        return diffs

    # -- applying ----------------------------------------------------------------------------
    def apply(self, topology: Topology) -> list[Change]:
        """Create what is missing and update what drifted; returns the changes made or blocked."""
        changes = self.plan(topology)
        specs = {f"topic {t.topic_id}": t for t in topology.topics}
        subs = {f"subscription {s.subscription_id}": s for s in topology.subscriptions}
        # Topics first: subscriptions and dead-letter policies refer to them.
        for change in sorted(changes, key=lambda c: not c.resource.startswith("topic")):
            if change.resource in specs:
                self._apply_topic(specs[change.resource], change.action)
            elif change.action in ("create", "update"):
                self._apply_subscription(subs[change.resource], change)
        return changes

    def _apply_topic(self, spec: TopicSpec, action: str) -> None:
        topic = types.Topic(
            name=self._topic_path(spec.topic_id), message_retention_duration=_duration(spec.retention_s)
        )
        if action == "create":
            # Created concurrently by another apply: the next plan shows any drift.
            with contextlib.suppress(gexc.AlreadyExists):
                self._publisher.create_topic(request=topic)
        else:
            mask = field_mask_pb2.FieldMask(paths=["message_retention_duration"])
            self._publisher.update_topic(request={"topic": topic, "update_mask": mask})

    def _subscription_message(self, spec: SubscriptionSpec) -> types.Subscription:
        sub = types.Subscription(
            name=self._subscription_path(spec.subscription_id),
            topic=self._topic_path(spec.topic_id),
            ack_deadline_seconds=spec.ack_deadline_s,
            message_retention_duration=_duration(spec.retention_s),
            enable_message_ordering=spec.ordering,
            # Never let an idle subscription expire: it holds money events.
            expiration_policy=types.ExpirationPolicy(),
        )
        if spec.dead_letter_topic_id:
            sub.dead_letter_policy = types.DeadLetterPolicy(
                dead_letter_topic=self._topic_path(spec.dead_letter_topic_id),
                max_delivery_attempts=spec.max_delivery_attempts,
            )
        if spec.min_backoff_s is not None and spec.max_backoff_s is not None:
            sub.retry_policy = types.RetryPolicy(
                minimum_backoff=_duration(spec.min_backoff_s), maximum_backoff=_duration(spec.max_backoff_s)
            )
        if spec.push_endpoint:
            push = types.PushConfig(push_endpoint=spec.push_endpoint)
            if spec.push_service_account:
                push.oidc_token = types.PushConfig.OidcToken(
                    service_account_email=spec.push_service_account, audience=spec.push_audience
                )
            sub.push_config = push
        return sub

    def _apply_subscription(self, spec: SubscriptionSpec, change: Change) -> None:
        sub = self._subscription_message(spec)
        if change.action == "create":
            with contextlib.suppress(gexc.AlreadyExists):
                self._subscriber.create_subscription(request=sub)
            return
        paths = sorted({d.split(":")[0].split(".")[0] for d in change.details})
        if "push_config" in paths:
            # push_config has its own RPC; update_subscription refuses to switch push/pull on some servers.
            self._subscriber.modify_push_config(subscription=sub.name, push_config=sub.push_config)
            paths.remove("push_config")
        if paths:
            mask = field_mask_pb2.FieldMask(paths=paths)
            self._subscriber.update_subscription(request={"subscription": sub, "update_mask": mask})
