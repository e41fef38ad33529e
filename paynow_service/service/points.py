"""PointsService use cases, one core for gRPC and Connect: credit, reverse, balance, ledger.

The caller's identity (the verified email, or "local" on the emulator) namespaces its
idempotency keys: a credit's entry id is `api:{caller}:{key}`, so two callers cannot
collide and a retried call is a replay. A reversal's entry id is `rev:{original}` (an
entry is reversed once, whoever asks); the caller's key is recorded on it, so a retry
with the same key is a replay while another key (or another caller) finds the entry
already reversed and gets a conflict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from paynow_service.domain.errors import InvalidRequestError, LedgerConflictError
from paynow_service.domain.ids import CONTROL_CHARS, as_kind
from paynow_service.domain.ledger import (
    ACTION_API_CREDIT,
    ACTION_API_REVERSE,
    PAYNOW_NAMESPACE,
    Balance,
    EntryRequest,
    Kind,
    LedgerEntry,
    LedgerResult,
    api_entry_id,
    reversal_entry_id,
)
from paynow_service.domain.ledger_rules import validate_entry_id, validate_uid

MAX_AMOUNT = 10**12
MAX_KEY_CHARS = 200
MAX_SOURCE_CHARS = 100
MAX_REASON_CHARS = 500
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1024
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Keys the service writes itself: a caller may not forge them.
RESERVED_METADATA = frozenset(
    {"idempotencyKey", "reason", "reversalOf", "recreditOf", "shortfall", "requestedAmount"}
)


class PointsLedger(Protocol):
    """The ledger port (FirestoreLedger in production, a fake in unit tests)."""

    async def apply(self, requests: Sequence[EntryRequest]) -> LedgerResult: ...

    async def get_balance(self, uid: str) -> Balance: ...

    async def list_ledger(
        self, uid: str, page_size: int, page_token: str
    ) -> tuple[list[LedgerEntry], str]: ...


@dataclass(frozen=True)
class CreditCommand:
    caller: str
    uid: str
    amount: int
    idempotency_key: str
    kind: str = "paid"
    source: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None  # required for promo: the lot's expiry


@dataclass(frozen=True)
class ReverseCommand:
    caller: str
    uid: str
    original_entry_id: str
    idempotency_key: str
    reason: str = ""


@dataclass(frozen=True)
class WriteResult:
    entry: LedgerEntry
    balance: Balance  # the wallet after the write (the current one on a replay)
    replayed: bool
    shortfall: int = 0


@dataclass(frozen=True)
class LedgerPage:
    entries: tuple[LedgerEntry, ...]
    next_page_token: str


class PointsCore:
    """Validates requests and turns them into ledger entries."""

    def __init__(self, ledger: PointsLedger) -> None:
        self._ledger = ledger

    async def credit(self, cmd: CreditCommand) -> WriteResult:
        _caller(cmd.caller)
        validate_uid(cmd.uid)
        _key(cmd.idempotency_key)
        if (
            not isinstance(cmd.amount, int)
            or isinstance(cmd.amount, bool)
            or not 1 <= cmd.amount <= MAX_AMOUNT
        ):
            raise InvalidRequestError(f"amount must be between 1 and {MAX_AMOUNT}")
        kind = _kind(cmd.kind)
        if kind == "promo" and cmd.expires_at is None:
            raise InvalidRequestError("a KIND_PROMO credit needs expires_at: promo points go into a lot")
        if kind == "paid" and cmd.expires_at is not None:
            raise InvalidRequestError("expires_at is only for KIND_PROMO credits")
        source = _text("source", cmd.source, MAX_SOURCE_CHARS) or "api"
        request = EntryRequest(
            entry_id=validate_entry_id(api_entry_id(cmd.caller, cmd.idempotency_key)),
            uid=cmd.uid,
            action="credit",
            amount=cmd.amount,
            source=source,
            kind=kind,
            metadata={**_metadata(cmd.metadata), "idempotencyKey": cmd.idempotency_key},
            created_by=cmd.caller,
            expires_at=cmd.expires_at,
            label=ACTION_API_CREDIT,
            note="api credit",
        )
        return await self._write(request)

    async def reverse(self, cmd: ReverseCommand) -> WriteResult:
        _caller(cmd.caller)
        validate_uid(cmd.uid)
        _key(cmd.idempotency_key)
        original = validate_entry_id(cmd.original_entry_id, "original_entry_id")
        if original.startswith(PAYNOW_NAMESPACE):
            raise InvalidRequestError(
                "entries of PayNow events move only with their order (refunds and chargebacks)"
            )
        reason = _text("reason", cmd.reason, MAX_REASON_CHARS)
        metadata = {"idempotencyKey": cmd.idempotency_key, **({"reason": reason} if reason else {})}
        request = EntryRequest(
            entry_id=validate_entry_id(reversal_entry_id(original)),
            uid=cmd.uid,
            action="reversal",
            amount=None,  # the whole original: partial reversals are for refund plugins
            source="api",
            reversal_of=original,
            metadata=metadata,
            created_by=cmd.caller,
            label=ACTION_API_REVERSE,
            note=f"api reversal of {original}",
        )
        result = await self._write(request)
        entry = result.entry
        if result.replayed and (
            entry.created_by != cmd.caller or entry.metadata.get("idempotencyKey") != cmd.idempotency_key
        ):
            raise LedgerConflictError(f"{original!r} was already reversed by another request")
        return result

    async def balance(self, uid: str) -> Balance:
        return await self._ledger.get_balance(validate_uid(uid))

    async def ledger(self, uid: str, page_size: int, page_token: str) -> LedgerPage:
        validate_uid(uid)
        if page_size < 0:
            raise InvalidRequestError("page_size cannot be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)  # above the maximum: coerced (AIP-158)
        entries, token = await self._ledger.list_ledger(uid, size, page_token)
        return LedgerPage(tuple(entries), token)

    async def _write(self, request: EntryRequest) -> WriteResult:
        result = await self._ledger.apply([request])
        (outcome,) = result.outcomes
        return WriteResult(outcome.entry, result.balances[request.uid], outcome.replayed, outcome.shortfall)


def _caller(caller: str) -> None:
    # The caller comes from a verified token (or "local"); an empty one is a wiring bug, not input.
    if not caller or "/" in caller or ":" in caller:
        raise InvalidRequestError("the caller identity is missing or unusable in an entry id")


def _key(key: str) -> None:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
        raise InvalidRequestError(f"idempotency_key must be 1 to {MAX_KEY_CHARS} characters")
    if "/" in key or CONTROL_CHARS.search(key):
        raise InvalidRequestError("idempotency_key cannot contain '/' or control characters")


def _kind(kind: str) -> Kind:
    checked = as_kind(kind)
    if checked is None:
        raise InvalidRequestError("kind must be KIND_PAID or KIND_PROMO")
    return checked


def _text(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidRequestError(f"{name} is longer than {limit} characters")
    return value


def _metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidRequestError(f"metadata has more than {MAX_METADATA_ENTRIES} entries")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS or "." in key or key.startswith("__"):
            raise InvalidRequestError(
                f"metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters, no '.' nor leading '__'"
            )
        if key in RESERVED_METADATA:
            raise InvalidRequestError(f"metadata key {key!r} is reserved")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequestError(f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE_CHARS}")
    return dict(metadata)
