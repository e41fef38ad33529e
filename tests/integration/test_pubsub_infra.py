"""`infra apply` / `infra plan` against the real Pub/Sub emulator."""

from __future__ import annotations

from google.cloud import pubsub_v1
from google.protobuf import field_mask_pb2

from paynow_service.adapters.pubsub_infra import (
    EMULATOR_MAX_SUBSCRIPTION_RETENTION_S,
    InfraOverrides,
    PubSubInfra,
    desired_topology,
)
from paynow_service.config import Settings


def _read_subscription(settings: Settings, subscription_id: str) -> pubsub_v1.types.Subscription:
    client = pubsub_v1.SubscriberClient()
    try:
        return client.get_subscription(subscription=settings.subscription_path(subscription_id))
    finally:
        client.close()


def test_apply_twice_creates_then_reports_nothing(emulator_settings: Settings) -> None:
    infra = PubSubInfra(emulator_settings)
    topology = desired_topology(emulator_settings)
    try:
        first = infra.apply(topology)
        assert {c.resource.split()[0] for c in first} == {"topic", "subscription"}
        assert all(c.action == "create" for c in first)
        assert len(first) == 4
        assert infra.apply(topology) == []
        assert infra.plan(topology) == []
    finally:
        infra.close()

    sub = _read_subscription(emulator_settings, emulator_settings.pubsub_subscription)
    assert sub.ack_deadline_seconds == 600
    assert sub.enable_message_ordering is True
    assert sub.dead_letter_policy.dead_letter_topic == emulator_settings.topic_path(
        emulator_settings.pubsub_dlq_topic
    )
    assert sub.dead_letter_policy.max_delivery_attempts == 5
    assert sub.retry_policy.minimum_backoff.total_seconds() == 10
    assert sub.retry_policy.maximum_backoff.total_seconds() == 600
    assert sub.topic == emulator_settings.topic_path(emulator_settings.pubsub_topic)
    assert sub.push_config.push_endpoint == ""

    dlq = _read_subscription(emulator_settings, emulator_settings.pubsub_dlq_subscription)
    # 14 days on GCP; the emulator's ceiling is 7 (see desired_topology).
    assert dlq.message_retention_duration.total_seconds() == EMULATOR_MAX_SUBSCRIPTION_RETENTION_S
    assert dlq.topic == emulator_settings.topic_path(emulator_settings.pubsub_dlq_topic)


def test_plan_reports_a_setting_changed_by_hand_and_apply_fixes_it(emulator_settings: Settings) -> None:
    infra = PubSubInfra(emulator_settings)
    topology = desired_topology(emulator_settings)
    try:
        infra.apply(topology)
        client = pubsub_v1.SubscriberClient()
        try:
            sub = pubsub_v1.types.Subscription(
                name=emulator_settings.subscription_path(emulator_settings.pubsub_subscription),
                ack_deadline_seconds=42,
            )
            client.update_subscription(
                request={
                    "subscription": sub,
                    "update_mask": field_mask_pb2.FieldMask(paths=["ack_deadline_seconds"]),
                }
            )
        finally:
            client.close()
        drift = infra.plan(topology)
        assert len(drift) == 1
        assert drift[0].action == "update"
        assert "ack_deadline_seconds: 42 -> 600" in drift[0].details
        infra.apply(topology)
        assert infra.plan(topology) == []
    finally:
        infra.close()
    assert (
        _read_subscription(emulator_settings, emulator_settings.pubsub_subscription).ack_deadline_seconds
        == 600
    )


def test_overrides_and_push_endpoint(emulator_settings: Settings) -> None:
    infra = PubSubInfra(emulator_settings)
    overrides = InfraOverrides(
        ack_deadline_s=10,
        min_backoff_s=1,
        max_backoff_s=2,
        push_endpoint="http://127.0.0.1:9/api/tasks/paynow/process",
    )
    try:
        infra.apply(desired_topology(emulator_settings, overrides))
        assert infra.plan(desired_topology(emulator_settings, overrides)) == []
        # Without --pull the push endpoint is kept (only the overridden values change back).
        kept = infra.plan(desired_topology(emulator_settings))
        assert [c.action for c in kept] == ["update"]
        assert not any("push_endpoint" in d for d in kept[0].details)
        # Back to pull, asked for explicitly: an update, never a recreate.
        back = infra.plan(desired_topology(emulator_settings, InfraOverrides(pull=True)))
        assert any("push_config.push_endpoint" in d for d in back[0].details)
        infra.apply(desired_topology(emulator_settings, InfraOverrides(pull=True)))
    finally:
        infra.close()
    sub = _read_subscription(emulator_settings, emulator_settings.pubsub_subscription)
    assert sub.push_config.push_endpoint == ""
    assert sub.ack_deadline_seconds == 600
