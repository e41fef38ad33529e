"""Event provenance: the MAC that tells the worker an event message came from our webhook (or `sweep`).

Every message published to the events topic carries attribute `event_mac`: the lowercase hex
HMAC-SHA256 of the message data bytes, keyed with the UTF-8 bytes of the first of
`EVENT_SIGNING_KEYS`. Every listed key verifies, so a key is rotated by putting the new one
first and keeping the old one listed (at least 21 days: the DLQ keeps letters 14, and a
replayed letter keeps the MAC it was signed with). Digests are compared in constant time,
and every key is tried even after a match. Pure: no I/O; the keys never leave this object
(its repr hides them).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

ATTR_EVENT_MAC = "event_mac"
MIN_KEY_CHARS = 32
_MAC_HEX_CHARS = 64  # SHA-256, hex


def event_mac(data: bytes, key: str) -> str:
    """The `event_mac` of message data `data` under `key` (lowercase hex HMAC-SHA256)."""
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()


def verify_event_mac(data: bytes, mac: str | None, keys: Sequence[str]) -> bool:
    """True when `mac` is the MAC of `data` under one of `keys` (none verifies without keys)."""
    if not mac or len(mac) != _MAC_HEX_CHARS or not mac.isascii():
        return False  # not a MAC at all: says nothing about the keys
    given = mac.encode("ascii")
    matched = False
    for key in keys:
        if key:
            # No short cut after a match: the timing does not tell which key signed.
            matched |= hmac.compare_digest(event_mac(data, key).encode("ascii"), given)
    return matched


@dataclass(frozen=True)
class EventSigner:
    """Signs with the first key, verifies with every key."""

    keys: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys or not all(self.keys):
            raise ValueError("an EventSigner needs at least one non-empty key")

    def sign(self, data: bytes) -> str:
        return event_mac(data, self.keys[0])

    def verify(self, data: bytes, mac: str | None) -> bool:
        return verify_event_mac(data, mac, self.keys)
