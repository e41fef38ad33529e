"""`webhookEvents` records written by the app's own webhook before cut-over, and what they mean.

The app's records always have `rawEventType` and never `eventType`. Their statuses mean
something else than ours, so they are read first, before any hash comparison (the app's
`payloadHash` hashes its own re-serialisation of the body and never equals ours):

- `processed`, `skipped`: the app handled the event: a duplicate, never processed again;
- `queued`: the app's queue worker treated every queued event as already processed, so the
  event was never credited: our record replaces the app's and the event is processed;
- `received`, `failed`, `failed_terminal` (and any status we do not know): the app may have
  credited some lines of an order and not others (each line was its own transaction): a
  duplicate, flagged `app_unfinished` for reconciliation, never credited again by us.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

AppVerdict = Literal["duplicate", "take_over", "unfinished"]

APP_HANDLED = frozenset({"processed", "skipped"})
APP_NEVER_CREDITED = frozenset({"queued"})
FLAG_APP_UNFINISHED = "app_unfinished"


def is_app_record(data: Mapping[str, Any] | None) -> bool:
    """True for a record the app's webhook wrote (it has `rawEventType` and no `eventType`)."""
    return data is not None and "rawEventType" in data and "eventType" not in data


def app_verdict(status: object) -> AppVerdict:
    """What a delivery of an event does when the app's record of it has this status."""
    if status in APP_HANDLED:
        return "duplicate"
    if status in APP_NEVER_CREDITED:
        return "take_over"
    return "unfinished"
