"""A PayNow delivery's envelope: the raw bytes decoded, strictly, into `Envelope`.

The envelope (`event_type`, `event_id`, `body`) must be exactly right, or the delivery
is malformed (`MalformedWebhookError`, answered 400). Duplicate object keys anywhere are
malformed: PayNow's JSON encoder cannot emit them, and a repeated `uid` or `quantity`
means different things to different parsers. `payload_hash` gives the body's canonical
hash, the same however PayNow spaced or ordered it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from paynow_service.domain.errors import MalformedWebhookError
from paynow_service.domain.ids import is_paynow_id

EVENT_TYPE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# PayNow bodies nest about eight levels; the bound keeps recursive code (hashing,
# logging) safe from a hostile document that the JSON parser still accepted.
MAX_DEPTH = 64

Obj = dict[str, Any]


@dataclass(frozen=True)
class Envelope:
    """The validated outer object of a delivery; `body` is still PayNow's raw JSON."""

    event_type: str
    event_id: str
    body: Obj

    @property
    def store_id(self) -> str:
        """`body.store_id` when it is an id, else "": enough to refuse a foreign store
        before (and whether or not) the rest of the body validates."""
        store = self.body.get("store_id")
        return store if isinstance(store, str) and is_paynow_id(store) else ""


def payload_hash(body_obj: Any) -> str:
    """SHA-256 hex of canonical JSON (sorted keys, compact, UTF-8): equal for equal bodies
    however PayNow spaced or ordered them. Pass the envelope's `body`."""
    canonical = json.dumps(body_obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: JSON may escape a lone surrogate ("\\ud800"), which strict UTF-8 refuses.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def decode_envelope(raw: bytes) -> Envelope:
    """Bytes -> `Envelope`, or `MalformedWebhookError` with a detail saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _malformed("body is not UTF-8")
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        _malformed("body nests too deeply")
    except ValueError:  # JSONDecodeError, NaN/Infinity, integers past the digit limit
        _malformed("body is not valid JSON")
    if not isinstance(doc, dict):
        _malformed("body is not a JSON object")
    if _too_deep(doc):
        _malformed(f"body nests deeper than {MAX_DEPTH} levels")
    event_type, event_id, payload = doc.get("event_type"), doc.get("event_id"), doc.get("body")
    if not isinstance(event_type, str) or not EVENT_TYPE_PATTERN.fullmatch(event_type):
        _malformed("event_type is missing or not an event type name")
    if not isinstance(event_id, str) or not is_paynow_id(event_id):
        _malformed("event_id is missing or not an id (letters, digits, '.', '_', '-'; at most 128)")
    if not isinstance(payload, dict):
        _malformed("body is missing or not an object")
    return Envelope(event_type=event_type, event_id=event_id, body=payload)


def _unique_keys(pairs: list[tuple[str, Any]]) -> Obj:
    obj: Obj = {}
    for key, value in pairs:
        if key in obj:
            # Raised through json.loads: the caller's `except ValueError` does not catch it.
            raise MalformedWebhookError(f"body repeats the key {key[:40]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _too_deep(doc: Obj) -> bool:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def _malformed(detail: str) -> NoReturn:
    raise MalformedWebhookError(detail)
