"""Messages of the app's old queue publisher, still on the topic at cut-over.

Its publisher sent JSON `{version, minCompatible, eventId, eventType, timestamp, region,
data: {order: {...}}}`, never a PaymentEvent and never signed by this service: the worker
dead-letters them as `legacy_message`, with what an operator needs to re-drive the event
from PayNow (ids only: the JSON also carries customer data that is never repeated).
"""

from __future__ import annotations

import json


def legacy_message_detail(data: bytes) -> str | None:
    """What an operator needs to know of a message of the app's old publisher (None if it is not one:
    theirs is any JSON object with a `version` field, never a PaymentEvent).

    Ids only (event, order, version): the JSON also carries customer data we never repeat.
    """
    if data.lstrip()[:1] != b"{":
        return None  # the cheap test first: a PaymentEvent is not JSON
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return None
    if not isinstance(doc, dict) or "version" not in doc:
        return None
    order = doc.get("data", {}).get("order") if isinstance(doc.get("data"), dict) else None
    ids = {
        "version": _plain_id(doc.get("version")),
        "event": _plain_id(doc.get("eventId")),
        "type": _plain_id(doc.get("eventType")),
        "order": _plain_id(order.get("id")) if isinstance(order, dict) else "",
    }
    named = ", ".join(f"{k} {v}" for k, v in ids.items() if v)
    return (
        f"the app's old queue message ({named or 'no ids'}), never signed by this service: "
        "re-drive the event from PayNow (runbook: cut-over)"
    )


def _plain_id(value: object) -> str:
    """An id fit for a log line (letters, digits, `-_.:`, at most 64), else ""."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_.:" for c in text) else ""
