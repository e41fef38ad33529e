"""PointsService at the edge, shared by gRPC and Connect: proto <-> domain, errors -> status codes.

`PointsApi` takes a proto request and the caller and returns the proto response; the
gRPC servicer and the Connect service are thin wrappers around it. The caller is put
in `CALLER` by each transport's auth interceptor (verified ID-token email, or "local"
with POINTS_AUTH=disabled); without it a call is refused, so a missing interceptor
fails closed. `STATUS_BY_ERROR` is the one table from errors to canonical status names
(the member names of both `grpc.StatusCode` and connectrpc's `Code`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from paynow_service import tracing
from paynow_service.domain.errors import (
    ContentionError,
    EntryNotFoundError,
    InvalidRequestError,
    LedgerConflictError,
    PermissionDeniedError,
    StorageUnavailableError,
    TerminalError,
    TransientError,
    UnauthenticatedError,
)
from paynow_service.domain.ledger import Balance, LedgerEntry, LotMove, Points
from paynow_service.gen.paynow.points.v1 import points_service_pb2 as pb
from paynow_service.logs import log
from paynow_service.service.points import CreditCommand, PointsCore, ReverseCommand, WriteResult

SERVICE_NAME = "paynow.points.v1.PointsService"
LOCAL_CALLER = "local"
logger = logging.getLogger("paynow_service.points")

CALLER: ContextVar[str | None] = ContextVar("points_caller", default=None)

# First match wins: subclasses before their bases.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidRequestError, "INVALID_ARGUMENT"),
    (LedgerConflictError, "ALREADY_EXISTS"),
    (EntryNotFoundError, "NOT_FOUND"),
    (ContentionError, "ABORTED"),
    (StorageUnavailableError, "UNAVAILABLE"),
    (UnauthenticatedError, "UNAUTHENTICATED"),
    (PermissionDeniedError, "PERMISSION_DENIED"),
    (TransientError, "UNAVAILABLE"),
    (TerminalError, "FAILED_PRECONDITION"),
)

_KINDS = {pb.KIND_PAID: "paid", pb.KIND_PROMO: "promo"}
_KIND_ENUMS = {"paid": pb.KIND_PAID, "promo": pb.KIND_PROMO}


def status_for(exc: BaseException) -> tuple[str, str]:
    """(status name, message for the caller). An error nobody expected is UNAVAILABLE (HTTP 503),
    never INTERNAL (500): the call may not have taken effect, and retrying with the same
    idempotency key is always safe. It says nothing of what went wrong inside."""
    for error_type, name in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return name, str(exc)
    return "UNAVAILABLE", "not durable; retry later"


def is_expected(exc: BaseException) -> bool:
    """True for the errors the API maps on purpose (the rest are bugs or unclassified outages)."""
    return any(isinstance(exc, error_type) for error_type, _ in STATUS_BY_ERROR)


def answer_failure(
    call_logger: logging.Logger, component: str, method: str, exc: BaseException, **fields: Any
) -> tuple[str, str]:
    """Log a failed call once, for gRPC and Connect alike (WARNING when the error is mapped on
    purpose, ERROR otherwise), and return its (status name, message for the caller)."""
    name, message = status_for(exc)
    expected = is_expected(exc)
    log(
        call_logger,
        logging.WARNING if expected else logging.ERROR,
        f"{method} failed" if expected else f"{method} not durable - answered {name}",
        component=component,
        code=name,
        error_type=type(exc).__name__,
        **fields,
    )
    return name, message


def rpc_span(method: str, system: str, headers: Mapping[str, str] | None) -> AbstractContextManager[Span]:
    """The server span of one call (`system`: grpc or connect), a child of the caller's `traceparent`
    (`headers`: the call's metadata, read only when tracing is on)."""
    if not tracing.enabled():
        return tracing.span(method)  # the shared no-op
    return _rpc_span(method, system, headers)


@contextlib.contextmanager
def _rpc_span(method: str, system: str, headers: Mapping[str, str] | None) -> Iterator[Span]:
    name = f"{SERVICE_NAME}/{method}"
    with tracing.span(name, kind=SpanKind.SERVER, parent=tracing.extract(headers)) as span:
        if span.is_recording():
            span.set_attributes({"rpc.system": system, "rpc.service": SERVICE_NAME, "rpc.method": method})
        yield span


def traced_result(span: Span, exc: BaseException | None = None) -> None:
    """The call's outcome on its span: OK, or the status name it was answered with (no message)."""
    if not span.is_recording():
        return
    if exc is None:
        span.set_attribute(tracing.OUTCOME, "OK")
        return
    name, _ = status_for(exc)
    span.set_attributes({tracing.OUTCOME: name, "error.type": type(exc).__name__})
    span.set_status(Status(StatusCode.ERROR, name))


class Authenticator(Protocol):
    async def verify(self, authorization: str | None) -> str: ...


class LocalCaller:
    """POINTS_AUTH=disabled (emulator only, enforced by Settings): every call comes from "local"."""

    async def verify(self, authorization: str | None) -> str:
        return LOCAL_CALLER


def current_caller() -> str:
    caller = CALLER.get()
    if not caller:
        raise UnauthenticatedError("no authenticated caller")
    return caller


class PointsApi:
    """The four RPCs, transport-free: proto request in, proto response out, domain errors raised."""

    def __init__(self, core: PointsCore) -> None:
        self._core = core

    async def credit_points(self, request: pb.CreditPointsRequest) -> pb.CreditPointsResponse:
        kind = _KINDS.get(request.kind)
        if kind is None:
            raise InvalidRequestError("kind must be KIND_PAID or KIND_PROMO")
        command = CreditCommand(
            caller=current_caller(),
            uid=request.uid,
            amount=request.amount,
            idempotency_key=request.idempotency_key,
            kind=kind,
            source=request.source,
            metadata=dict(request.metadata),
            expires_at=request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None,
        )
        result = await self._core.credit(command)
        _log_write("CreditPoints", result)
        return pb.CreditPointsResponse(**_write_fields(result))

    async def reverse_points(self, request: pb.ReversePointsRequest) -> pb.ReversePointsResponse:
        command = ReverseCommand(
            caller=current_caller(),
            uid=request.uid,
            original_entry_id=request.original_entry_id,
            idempotency_key=request.idempotency_key,
            reason=request.reason,
        )
        result = await self._core.reverse(command)
        _log_write("ReversePoints", result)
        return pb.ReversePointsResponse(**_write_fields(result))

    async def get_balance(self, request: pb.GetBalanceRequest) -> pb.GetBalanceResponse:
        current_caller()
        balance = await self._core.balance(request.uid)
        return pb.GetBalanceResponse(**_balance_fields(balance))

    async def list_ledger(self, request: pb.ListLedgerRequest) -> pb.ListLedgerResponse:
        current_caller()
        page = await self._core.ledger(request.uid, request.page_size, request.page_token)
        return pb.ListLedgerResponse(
            entries=[entry_to_proto(e) for e in page.entries], next_page_token=page.next_page_token
        )


def entry_to_proto(entry: LedgerEntry) -> pb.LedgerEntry:
    """Any entry of the shared ledger, whoever wrote it; what was not interpreted goes in unread_fields."""
    mine = entry.pre or Points()
    after = entry.post or Points()
    message = pb.LedgerEntry(
        entry_id=entry.entry_id,
        uid=entry.uid,
        action=_action(entry),
        kind=_KIND_ENUMS.get(entry.channel, pb.KIND_UNSPECIFIED),
        amount=entry.amount,
        source=entry.source,
        pre=mine.promo if entry.channel == "promo" else mine.paid,
        post=after.promo if entry.channel == "promo" else after.paid,
        metadata=_string_map(entry.metadata),
        created_at=_timestamp(entry.created_at),
        created_by=entry.created_by,
        type=entry.type,
        channel=entry.channel,
        status=entry.status,
        ledger_action=entry.action,
        note=entry.note,
        consumed_lots=[_lot_move(move) for move in entry.consumed_lots],
        shape=entry.shape,
        unread_fields=_string_map(entry.unread),
    )
    for name, points in (("pre_balance", entry.pre), ("post_balance", entry.post), ("delta", entry.delta)):
        if points is not None:
            getattr(message, name).CopyFrom(pb.Points(paid=points.paid, promo=points.promo))
    if entry.credit_lot is not None:
        message.credit_lot.CopyFrom(_lot_move(entry.credit_lot))
    return message


def _action(entry: LedgerEntry) -> pb.Action:
    if entry.shape == "unknown":
        return pb.ACTION_OTHER
    if entry.is_reversal:
        return pb.ACTION_REVERSAL
    if entry.type == "credit":
        return pb.ACTION_CREDIT
    return pb.ACTION_DEBIT if entry.type == "debit" else pb.ACTION_OTHER


def _lot_move(move: LotMove) -> pb.LotMove:
    message = pb.LotMove(lot_id=move.lot_id, amount=move.amount)
    if move.expires_at is not None:
        message.expires_at.CopyFrom(_timestamp(move.expires_at))
    return message


def _balance_fields(balance: Balance) -> dict[str, Any]:
    now = datetime.now(UTC)
    lots = [
        pb.PromoLot(
            id=lot.lot_id,
            amount_remaining=lot.amount_remaining,
            expires_at=_timestamp(lot.expires_at),
            source=lot.source,
            expired=not lot.spendable(now),
        )
        for lot in balance.lots
    ]
    fields: dict[str, Any] = {
        "paid_balance": balance.paid,
        "promo_balance": balance.promo,
        "promo_stored": balance.promo_stored,
        "promo_lots": lots,
    }
    if balance.updated_at is not None:
        fields["updated_at"] = _timestamp(balance.updated_at)
    return fields


def balance_to_proto(balance: Balance) -> pb.Balance:
    return pb.Balance(**_balance_fields(balance))


def _write_fields(result: WriteResult) -> dict[str, Any]:
    return {
        "entry": entry_to_proto(result.entry),
        "balance": balance_to_proto(result.balance),
        "replayed": result.replayed,
    }


def _string_map(metadata: Mapping[str, Any]) -> dict[str, str]:
    # PayNow entries carry ints (quantity, cycle): the proto map holds strings.
    return {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in metadata.items()}


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _log_write(method: str, result: WriteResult) -> None:
    # Ids and amounts only: the entry id of an API credit holds the caller's email.
    log(
        logger,
        logging.INFO,
        f"{method} applied" if not result.replayed else f"{method} replayed",
        component="points_grpc",
        uid=result.entry.uid,
        points=result.entry.amount,
        replayed=result.replayed,
        shortfall=result.shortfall or None,
    )
