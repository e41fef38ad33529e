"""`paynow-service infra apply|plan`: the Pub/Sub topology of SPEC section 4."""

from __future__ import annotations

import argparse
import sys

from paynow_service import bootstrap
from paynow_service.adapters.gcp_schema import ExtrasError, extras_apply, extras_plan
from paynow_service.adapters.pubsub_infra import InfraOverrides, desired_topology
from paynow_service.config import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    overrides = InfraOverrides(
        ack_deadline_s=args.ack_deadline,
        min_backoff_s=args.min_backoff,
        max_backoff_s=args.max_backoff,
        push_endpoint=args.push_endpoint,
        pull=args.pull,
    )
    topology = desired_topology(settings, overrides)
    target = f"emulator {settings.pubsub_emulator_host}" if settings.pubsub_emulator_host else "GCP"
    print(f"Pub/Sub project {settings.google_cloud_project} on {target}")
    # Schema and TTL first: a missing events topic is then created with its schema.
    try:
        extra_lines = extras_apply(settings) if args.action == "apply" else extras_plan(settings)
    except ExtrasError as err:
        print(f"infra {args.action}: {err}", file=sys.stderr)
        return 1
    infra = bootstrap.pubsub_infra(settings)
    try:
        changes = infra.apply(topology) if args.action == "apply" else infra.plan(topology)
    finally:
        infra.close()
    for note in topology.notes:
        print(f"note: {note}")
    for line in extra_lines:
        print(line)
    if not changes:
        print("No changes: topics and subscriptions match the specification.")
    verb = {"apply": "applied", "plan": "planned"}[args.action]
    for change in changes:
        prefix = "" if change.action == "blocked" else f"{verb}: "
        print(prefix + change.describe())
    blocked = [c for c in changes if c.action == "blocked"]
    return 1 if blocked else 0
