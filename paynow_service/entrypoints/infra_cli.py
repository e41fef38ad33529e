"""`paynow-service infra apply|plan`: the Pub/Sub topology of SPEC section 4."""

from __future__ import annotations

import argparse

from paynow_service.adapters.pubsub_infra import InfraOverrides, PubSubInfra, desired_topology
from paynow_service.config import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    overrides = InfraOverrides(
        ack_deadline_s=args.ack_deadline,
        min_backoff_s=args.min_backoff,
        max_backoff_s=args.max_backoff,
        push_endpoint=args.push_endpoint,
    )
    topology = desired_topology(settings, overrides)
    target = f"emulator {settings.pubsub_emulator_host}" if settings.pubsub_emulator_host else "GCP"
    print(f"Pub/Sub project {settings.google_cloud_project} on {target}")
    infra = PubSubInfra(settings)
    try:
        changes = infra.apply(topology) if args.action == "apply" else infra.plan(topology)
    finally:
        infra.close()
    for note in topology.notes:
        print(f"note: {note}")
    if not changes:
        print("No changes: topics and subscriptions match the specification.")
    verb = {"apply": "applied", "plan": "planned"}[args.action]
    for change in changes:
        prefix = "" if change.action == "blocked" else f"{verb}: "
        print(prefix + change.describe())
    blocked = [c for c in changes if c.action == "blocked"]
    return 1 if blocked else 0
