"""Where an event stands, as closed sets of names: checked by mypy wherever one is written.

- `EventStatus`: our `webhookEvents/{event_id}.status` (the app's records have statuses of
  their own, read by domain/app_records.py);
- `DecisionResult`: what `decide` concluded for an event (`Decision.result`);
- `StepResult`: what one refund or dispute did to its order (`Step.result`);
- `OutcomeStatus`: what the processing core tells its caller (ack, or retry on `transient`).
"""

from __future__ import annotations

from typing import Literal

EventStatus = Literal["queued", "processed", "ignored", "failed_terminal", "dead_lettered", "parked"]
FailedStatus = Literal["failed_terminal", "dead_lettered"]
# A status of ours after which a delivery of the event is a duplicate.
FINAL_STATUSES: frozenset[EventStatus] = frozenset(
    {"processed", "ignored", "failed_terminal", "dead_lettered", "parked"}
)

StepResult = Literal["reversed", "recredited", "status_updated", "no_change"]
DecisionResult = Literal[
    "credited", "reversed", "recredited", "status_updated", "no_change", "ignored", "duplicate", "parked"
]
OutcomeStatus = Literal["processed", "duplicate", "ignored", "failed_terminal", "dead_lettered", "transient"]
