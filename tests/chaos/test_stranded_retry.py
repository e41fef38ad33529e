"""A delivery answered 503 must be finished by PayNow's retry, without waiting for a sweep.

Reproduction (queue mode, PUBLISH_TIMEOUT_S=1, the default PUBLISH_LEASE_S=30):
1. freeze Pub/Sub; deliver an order of an unknown product: the record is created, the
   publish times out, the inline fallback decides unknown_product, its dead letter cannot
   be published either: answer 503 (right: PayNow will retry);
2. resume Pub/Sub; PayNow retries a moment later: the record exists, `queued`, without
   `publishedAt`. Before the fix its lease (taken at step 1) had not expired, so the retry
   was answered 200 "duplicate" and the event stayed `queued` until a sweep.

The same held for any event whose publish and inline processing both failed. Now the
failed attempt gives its lease back, so the retry re-drives the event at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from paynow_loadtest.traffic import new_traffic
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack
from tests.chaos.harness import SECRET, ChaosStack
from tests.support.stack import doc, wait_for

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(120)]


def test_a_503_then_paynow_retry_ends_the_event_without_a_sweep(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    stack = ChaosStack(emulators, tmp_path)
    try:
        factory, users, _ = new_traffic(stack.catalog, users=1)
        bad = factory.unknown_product(users[0])
        emulators.pubsub.pause()
        try:
            first = post(stack.url, bad.body, SECRET)
        finally:
            emulators.pubsub.resume()
        assert first.status_code == 503, first.text
        answers = [first.status_code]
        deadline = time.monotonic() + 20
        while not 200 <= answers[-1] < 300 and time.monotonic() < deadline:
            time.sleep(0.5)
            answers.append(post(stack.url, bad.body, SECRET).status_code)
        assert 200 <= answers[-1] < 300, answers
        record = wait_for(
            lambda: (
                (doc(stack.project, f"webhookEvents/{bad.event_id}") or {}).get("status") == "failed_terminal"
            ),
            timeout=6,
        )
        state = doc(stack.project, f"webhookEvents/{bad.event_id}") or {}
        assert record, json.dumps({k: str(v) for k, v in state.items() if k != "event"})
    finally:
        stack.stop()
