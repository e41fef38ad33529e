"""ListLedger on Firestore: every entry of a user's ledger, newest first, a page at a time.

Entries are ordered by `createdAt`, then by id. A query ordered by a field skips the
documents that lack it, and the ledger is shared with writers we do not control, so an
entry without a `createdAt` timestamp (missing, or of another type) would vanish from
the listing or sort among the newest: the first part lists the entries whose
`createdAt` is a timestamp, and once they are exhausted the listing goes on with the
others, by id. The page token says which
of the two parts it is in and after which entry; it is bound to the uid.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from google.cloud.firestore import AsyncClient, Query
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from paynow_service.adapters.firestore_names import LEDGER, USERS
from paynow_service.domain.errors import InvalidRequestError
from paynow_service.domain.ids import is_document_id
from paynow_service.domain.ledger import LedgerEntry
from paynow_service.domain.ledger_reader import read_entry

DATED, UNDATED = "t", "n"
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_SCAN_CHUNK = 300


async def list_entries(
    db: AsyncClient, uid: str, page_size: int, page_token: str, *, timeout_s: float
) -> tuple[list[LedgerEntry], str]:
    if page_size < 1:
        raise InvalidRequestError("page_size must be at least 1")
    ledger = db.collection(USERS, uid, LEDGER)
    part, after = _decode_token(uid, page_token) if page_token else (DATED, "")
    snaps: list[Any] = []
    if part == DATED:
        # A range filter on a timestamp matches timestamps only (Firestore compares within a type).
        query = (
            ledger.where(filter=FieldFilter("createdAt", ">=", _EARLIEST))
            .order_by("createdAt", direction=Query.DESCENDING)
            .order_by(FieldPath.document_id(), direction=Query.DESCENDING)
        )
        if after:
            cursor = await ledger.document(after).get(timeout=timeout_s)
            if not cursor.exists:
                raise InvalidRequestError("page_token does not name an entry of this ledger")
            query = query.start_after(cursor)
        snaps = list(await query.limit(page_size + 1).get(timeout=timeout_s))
        if len(snaps) > page_size:
            return _entries(uid, snaps[:page_size]), _encode_token(uid, DATED, snaps[page_size - 1].id)
        after = ""
    undated = await _undated_ids(ledger, after, page_size - len(snaps) + 1, timeout_s)
    more = len(undated) > page_size - len(snaps)
    undated = undated[: page_size - len(snaps)]
    if undated:
        refs = [ledger.document(entry_id) for entry_id in undated]
        found = {snap.id: snap async for snap in db.get_all(refs, timeout=timeout_s) if snap.exists}
        snaps += [found[entry_id] for entry_id in undated if entry_id in found]
    last = undated[-1] if undated else after
    return _entries(uid, snaps), _encode_token(uid, UNDATED, last) if more else ""


async def _undated_ids(ledger: Any, after: str, wanted: int, timeout_s: float) -> list[str]:
    """Up to `wanted` ids of entries without a `createdAt` timestamp, by id, after `after`."""
    found: list[str] = []
    while len(found) < wanted:
        query = ledger.order_by(FieldPath.document_id()).select(["createdAt"]).limit(_SCAN_CHUNK)
        if after:
            query = query.start_after({FieldPath.document_id(): ledger.document(after)})
        chunk = list(await query.get(timeout=timeout_s))
        found += [
            snap.id for snap in chunk if not isinstance((snap.to_dict() or {}).get("createdAt"), datetime)
        ]
        if len(chunk) < _SCAN_CHUNK:
            break
        after = chunk[-1].id
    return found[:wanted]


def _entries(uid: str, snaps: list[Any]) -> list[LedgerEntry]:
    return [read_entry(uid, snap.id, snap.to_dict() or {}) for snap in snaps]


def _encode_token(uid: str, part: str, entry_id: str) -> str:
    raw = json.dumps({"u": uid, "p": part, "after": entry_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(uid: str, token: str) -> tuple[str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidRequestError("page_token is not a token this service issued") from None
    if not isinstance(data, dict) or data.get("u") != uid or not isinstance(data.get("after"), str):
        raise InvalidRequestError("page_token belongs to another listing")
    part = data.get("p", DATED)
    after: str = data["after"]
    if part not in (DATED, UNDATED) or (part == DATED and not after):
        raise InvalidRequestError("page_token is not a token this service issued")
    # Only a usable Firestore document id may reach the query: Firestore answers others with an error.
    if not is_document_id(after) or (after == "" and part == DATED):
        raise InvalidRequestError("page_token is not a token this service issued")
    return part, after
