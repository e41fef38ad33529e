"""The id and value rules every layer shares, each written once.

- `is_document_id`: what Firestore accepts as a document id (a uid, an entry id, a page
  token's cursor all become one).
- `is_uid`: our user id as the webhook accepts it from PayNow (it becomes users/{uid}).
- `is_paynow_id`: a PayNow id that becomes a document id, a ledger key or an ordering key.
- `INT64_MAX`, `MAX_UID_CHARS`: the limits of amounts and uids.
- `as_kind`: the balance a credit goes to, `paid` or `promo`.
The ledger's entry ids are built by the helpers of domain/ledger.py.
"""

from __future__ import annotations

import re

from paynow_service.domain.ledger import Kind

INT64_MAX = 2**63 - 1
MAX_UID_CHARS = 128  # Firebase Auth's limit
MAX_ENTRY_ID_BYTES = 500
KINDS: tuple[Kind, ...] = ("paid", "promo")
# No '/' (a path), no ':' (it could alias a namespaced ledger key), at most 128 characters.
PAYNOW_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_DOCUMENT_ID_BYTES = 1500
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def is_document_id(value: str) -> bool:
    """Firestore's rule for a document id: no '/', not '.' or '..', not __reserved__, at most 1500
    bytes of UTF-8 (a lone surrogate does not encode: Firestore refuses it with an error)."""
    reserved = value.startswith("__") and value.endswith("__")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return "/" not in value and value not in (".", "..") and not reserved and size <= MAX_DOCUMENT_ID_BYTES


def is_uid(value: object) -> bool:
    """Our user id as PayNow may send it: a document id, printable, trimmed, at most MAX_UID_CHARS."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_CHARS
        and is_document_id(value)
        and value.isprintable()
        and value == value.strip()
    )


def is_paynow_id(value: object) -> bool:
    """An id that may become a document id, a ledger key or an ordering key (`PAYNOW_ID_PATTERN`)."""
    return isinstance(value, str) and PAYNOW_ID_PATTERN.fullmatch(value) is not None


def as_kind(value: object) -> Kind | None:
    """`value` as a balance kind, or None when it is neither "paid" nor "promo"."""
    if value == "paid":
        return "paid"
    if value == "promo":
        return "promo"
    return None
