"""`paynow-service dlq list | replay | purge`: inspect and re-drive dead letters.

Reads PUBSUB_DLQ_SUBSCRIPTION (adapters/dead_letter_queue.py). `list` releases every message
it looked at (nothing is consumed). `replay` is service/dead_letter_replay.py: the letter
back on the events topic as it came (never signed), its record reset to `queued`, then
acknowledged; running it twice is safe. `purge` acknowledges (deletes) dead letters after
asking, unless `--yes`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from paynow_service import bootstrap
from paynow_service.adapters.dead_letter_queue import DeadLetter, DeadLetterQueue
from paynow_service.config import Settings
from paynow_service.service.dead_letter_replay import UNPROVEN_REASONS, replay


def _print_table(letters: list[DeadLetter]) -> None:
    if not letters:
        print("No dead letters.")
        return
    print(
        f"{'event_id':<22} {'event_type':<28} {'reason':<22} {'class':<9} {'attempts':>8} {'age':>8}  source"
    )
    for d in letters:
        source = "pubsub" if d.forwarded_by_pubsub else "worker"
        age = f"{d.age_s // 3600}h{d.age_s % 3600 // 60:02d}m"
        print(
            f"{d.event_id or '?':<22} {d.event_type or '?':<28} {d.reason:<22} {d.error_class:<9} "
            f"{d.attempts or '-':>8} {age:>8}  {source}{'' if d.decodes else ' (undecodable)'}"
        )
    print(f"{len(letters)} dead letter(s).")
    legacy = sum(1 for d in letters if d.reason == "legacy_message")
    if legacy:
        print(
            f"{legacy} legacy_message: the app's old queue messages (JSON, from before cut-over), never "
            "signed by this service. A replay cannot credit them: re-drive each event from PayNow "
            "(docs/runbook.md, cut-over), then purge them."
        )


async def _replay(settings: Settings, letters: list[DeadLetter], dlq: DeadLetterQueue) -> int:
    async with bootstrap.replay_ports(settings) as (records, publisher):
        report = await replay(letters, records, publisher, dlq)
    for letter, why in report.failed:
        print(f"replay of {letter.event_id or letter.message_id} failed: {why}", file=sys.stderr)
    for letter in report.replayed:
        print(f"replayed {letter.event_id or letter.message_id} ({letter.reason})")
        if letter.reason in UNPROVEN_REASONS:
            print(
                f"  {letter.event_id or letter.message_id}: forwarded unchanged, it will come back as "
                f"{letter.reason} (see the runbook's DLQ triage)",
                file=sys.stderr,
            )
    return len(report.failed)


def run(settings: Settings, args: argparse.Namespace) -> int:
    dlq = bootstrap.dead_letter_queue(settings)
    try:
        letters = dlq.read(args.max)
        if args.action == "list":
            if args.json:
                for letter in letters:
                    print(json.dumps(letter.public(), sort_keys=True))
            else:
                _print_table(letters)
            return 0
        if args.action == "replay":
            return _run_replay(settings, args, letters, dlq)
        return _run_purge(args, letters, dlq)
    finally:
        dlq.close()


def _run_replay(
    settings: Settings, args: argparse.Namespace, letters: list[DeadLetter], dlq: DeadLetterQueue
) -> int:
    if not args.all and not args.event_id:
        print("dlq replay: give --event-id ID (repeatable) or --all", file=sys.stderr)
        return 2
    chosen = letters if args.all else [d for d in letters if d.event_id in set(args.event_id)]
    missing = set(args.event_id) - {d.event_id for d in chosen}
    for event_id in sorted(missing):
        print(f"no dead letter for event {event_id}", file=sys.stderr)
    if args.dry_run:
        for letter in chosen:
            print(
                f"would replay {letter.event_id or letter.message_id} ({letter.reason}) "
                f"with ordering key {letter.ordering_key or '(none)'}"
            )
        return 0
    failures = asyncio.run(_replay(settings, chosen, dlq))
    print(f"{len(chosen) - failures} replayed, {failures} failed")
    return 1 if failures or missing else 0


def _run_purge(args: argparse.Namespace, letters: list[DeadLetter], dlq: DeadLetterQueue) -> int:
    if not letters:
        print("No dead letters.")
        return 0
    if not args.yes:
        try:
            answer = input(f"Delete {len(letters)} dead letter(s) for good? Type 'yes': ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            print("Nothing deleted.")
            return 1
    dlq.ack(letters)
    print(f"Purged {len(letters)} dead letter(s).")
    return 0
