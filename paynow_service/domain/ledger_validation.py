"""The ledger's shape checks: what a request must be before any stored state is read.

`validate_request` refuses, with `InvalidRequestError` on the first failure, a request no
state could make valid: a bad uid or entry id, an unknown action or kind, an amount outside
int64, an expiry where none belongs, or an entry id that does not match its lineage (a
reversal's id is `rev{n}:{original}`, a re-credit's `recredit{n}:{original}`).
"""

from __future__ import annotations

from collections.abc import Mapping

from paynow_service.domain.errors import InvalidRequestError
from paynow_service.domain.ids import (
    CONTROL_CHARS,
    INT64_MAX,
    KINDS,
    MAX_ENTRY_ID_BYTES,
    MAX_UID_CHARS,
    as_kind,
    is_document_id,
)
from paynow_service.domain.ledger import EntryRequest, recredit_entry_id, reversal_entry_id

MAX_GENERATION = 1000
_ACTIONS = ("credit", "reversal")


def validate_uid(uid: object) -> str:
    if not isinstance(uid, str) or not uid.strip():
        raise InvalidRequestError("uid must be a non-empty string")
    if len(uid) > MAX_UID_CHARS:
        raise InvalidRequestError(f"uid is longer than {MAX_UID_CHARS} characters")
    _check_document_id("uid", uid)
    return uid


def validate_entry_id(entry_id: object, what: str = "entry id") -> str:
    if not isinstance(entry_id, str) or not entry_id.strip():
        raise InvalidRequestError(f"{what} must be a non-empty string")
    if len(entry_id.encode("utf-8")) > MAX_ENTRY_ID_BYTES:
        raise InvalidRequestError(f"{what} is longer than {MAX_ENTRY_ID_BYTES} bytes")
    _check_document_id(what, entry_id)
    return entry_id


def _check_document_id(what: str, value: str) -> None:
    if not is_document_id(value):
        raise InvalidRequestError(f"{what} {value!r} cannot be a Firestore document id")
    if CONTROL_CHARS.search(value):
        raise InvalidRequestError(f"{what} contains control characters")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_request(request: EntryRequest) -> None:
    """Shape checks that need no stored state; InvalidRequestError on the first failure."""
    validate_entry_id(request.entry_id)
    validate_uid(request.uid)
    if request.action not in _ACTIONS:
        raise InvalidRequestError(f"action must be one of {_ACTIONS}")
    if as_kind(request.kind) is None:
        raise InvalidRequestError(f"kind must be one of {KINDS}")
    if not isinstance(request.source, str):
        raise InvalidRequestError("source must be a string")
    if not isinstance(request.metadata, Mapping) or not all(isinstance(k, str) for k in request.metadata):
        raise InvalidRequestError("metadata must be a mapping with string keys")
    amount = request.amount
    if amount is not None and (not _is_int(amount) or abs(amount) > INT64_MAX):
        raise InvalidRequestError("amount must be an int64 integer")
    if request.reversal_of is not None:
        validate_entry_id(request.reversal_of, "reversal_of")
    _check_expiry(request)
    _check_lineage(request)


def _check_expiry(request: EntryRequest) -> None:
    promo_credit = request.action == "credit" and request.reversal_of is None and request.kind == "promo"
    if promo_credit and request.expires_at is None:
        raise InvalidRequestError("a promo credit needs an expiry (expires_at): its points go into a lot")
    if request.expires_at is not None and not promo_credit:
        raise InvalidRequestError("only a promo credit takes an expiry (expires_at)")
    if request.expires_at is not None and request.expires_at.tzinfo is None:
        raise InvalidRequestError("expires_at must carry a time zone")


def _check_lineage(request: EntryRequest) -> None:
    """The generation, the entry id a reversal or re-credit must have, and the amount each allows."""
    generation, amount = request.generation, request.amount
    if not _is_int(generation) or not 1 <= generation <= MAX_GENERATION:
        raise InvalidRequestError(f"generation must be from 1 to {MAX_GENERATION}")
    if request.reversal_of is None and generation != 1:
        raise InvalidRequestError("only reversals and re-credits have generations")
    if request.action == "reversal":
        if request.reversal_of is None:
            raise InvalidRequestError("a reversal must name the entry it reverses (reversal_of)")
        # One id per original and generation is what makes a reversal happen once.
        if request.entry_id != reversal_entry_id(request.reversal_of, generation):
            raise InvalidRequestError(
                f"a reversal's entry id must be {reversal_entry_id(request.reversal_of, generation)!r}"
            )
        if amount == 0:
            raise InvalidRequestError("a partial reversal must take back at least 1 point")
    elif request.reversal_of is not None:
        if request.entry_id != recredit_entry_id(request.reversal_of, generation):
            raise InvalidRequestError(
                f"a re-credit's entry id must be {recredit_entry_id(request.reversal_of, generation)!r}"
            )
        if amount is not None and amount <= 0:
            raise InvalidRequestError("a re-credit amount must be greater than zero")
    elif amount is None or amount <= 0:
        raise InvalidRequestError("a credit amount must be greater than zero")
