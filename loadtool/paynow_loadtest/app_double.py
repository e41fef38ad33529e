"""A test double of the points code of the web app that spends the wallets we credit.

That app (Next.js on firebase-admin; we cannot change it) reads and spends the same
`users/{uid}/wallet/points` and `users/{uid}/ledger/{id}` documents as this service, at the
same time. `AppDouble` restates its behaviour as facts, step by step, on the same Firestore,
so tests and the load tool can run it beside the service. The wallet is `paidBalance`,
`promoBalance`, `promoLots` `[{id, amountRemaining, expiresAt (Timestamp), source}]` sorted by
`expiresAt`, `createdAt`, `updatedAt`, `v: 1`; its entries are `{type, channel, amount
(positive), action, actionId, pre, post ({paid, promo}), consumedLots | creditLot, createdAt,
createdBy, v: 1}`. The app's lazy subscription top-up in getWallet is off, so not modelled.

Quirks kept on purpose (the service must survive them):

- spend skips expired lots, then DROPS them (and emptied ones) and overwrites `promoBalance`
  with the survivors' sum: expired points vanish with no ledger entry of their own (the
  spend's `pre.promo - post.promo - sum(consumedLots)` is the expired amount), and promo
  points added to `promoBalance` without a lot are erased;
- spend fails "Inconsistent promo balance" when lots give more than the stored `promoBalance`;
- consumption is matched back to lots by `id`: lots sharing an id all lose that id's total;
- `get_wallet` WRITES (`users/{uid}` and an empty wallet when missing), and `preview_spend`
  calls it, then counts expired lots as spendable;
- `get_ledger` orders by `createdAt` alone, so entries without one never show.

Transactions behave like firebase-admin's Node `runTransaction`: a fresh transaction per
attempt, up to 5 attempts, retried on its retryable codes (contention aborts, "Transaction
lock timeout", failed commits) after a jittered exponential backoff; the app's own errors
are never retried. Every timestamp, and the expiry test (`expiresAt <= now`), use `clock`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud.firestore import AsyncClient, AsyncTransaction, Query, async_transactional

T = TypeVar("T")
Doc = dict[str, Any]
Expiry = datetime | None

INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
INCONSISTENT_PROMO_BALANCE = "INCONSISTENT_PROMO_BALANCE"
PROMO_REQUIRES_EXPIRY = "PROMO_REQUIRES_EXPIRY"

# The status codes Node's runTransaction retries (plus the Python client's lock-timeout text).
_RETRYABLE: tuple[type[BaseException], ...] = (gexc.Aborted, gexc.Cancelled, gexc.Unknown)
_RETRYABLE += (gexc.DeadlineExceeded, gexc.InternalServerError, gexc.ServiceUnavailable)
_RETRYABLE += (gexc.Unauthenticated, gexc.ResourceExhausted)
_BACKOFF_FACTOR = 1.5  # Node's: 0 s before the first attempt, then initial, x1.5 each time, +-50% jitter


class AppError(Exception):
    """An error the app's points code raises on purpose; `code` names it."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or code)
        self.code = code


class AppDouble:
    """The app's points service (getWallet, spend, previewSpend, credit, getLedger) over Firestore."""

    def __init__(
        self,
        db: AsyncClient,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        attempts: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        """`on_retry` is told of every retried failure (for counting contention)."""
        self._db, self._clock, self._attempts, self._on_retry = db, clock, attempts, on_retry
        self._backoff_s = (backoff_initial_s, backoff_max_s)

    async def get_wallet(self, uid: str) -> Doc:
        """The wallet; creates `users/{uid}` and an empty wallet first when they are missing."""
        user_ref, wallet_ref = self._db.document("users", uid), self._wallet_ref(uid)

        async def work(tx: AsyncTransaction) -> Doc:
            user, wallet = await self._read(tx, user_ref, wallet_ref)
            now = self._clock()
            if not user.exists:
                tx.set(user_ref, {"uid": uid, "createdAt": now, "updatedAt": now, "status": "active"})
            if wallet.exists:
                return wallet.to_dict() or {}
            empty = {"paidBalance": 0, "promoBalance": 0, "promoLots": [], "createdAt": now, "updatedAt": now}
            empty["v"] = 1
            tx.set(wallet_ref, empty)
            return empty

        return await self._run(work)

    async def spend(self, uid: str, cost: int, action: str, action_id: str) -> Doc:
        """Debit `cost`: unexpired lots by earliest expiry, then paid; returns the ledger entry."""
        wallet_ref, entry_ref = self._wallet_ref(uid), self._entry_ref(uid, action_id)

        async def work(tx: AsyncTransaction) -> Doc:
            wallet_snap, entry_snap = await self._read(tx, wallet_ref, entry_ref)
            if entry_snap.exists:
                return entry_snap.to_dict() or {}
            wallet = wallet_snap.to_dict() or {}  # a missing wallet reads as zeros
            paid, promo, lots = _balances(wallet)
            now = self._clock()
            remaining, consumed = cost, []
            for lot in lots:
                if remaining <= 0:
                    break
                if _expired(lot, now):
                    continue
                take = min(remaining, int(lot["amountRemaining"]))
                if take > 0:
                    consumed.append({"lotId": lot["id"], "amount": take})
                    remaining -= take
            if cost - remaining > promo:
                raise AppError(INCONSISTENT_PROMO_BALANCE, "Inconsistent promo balance")
            if remaining > paid:
                raise AppError(INSUFFICIENT_POINTS)
            taken: dict[str, int] = {}
            for move in consumed:
                taken[move["lotId"]] = taken.get(move["lotId"], 0) + move["amount"]
            kept = [
                {**lot, "amountRemaining": left}
                for lot in lots
                if (left := int(lot["amountRemaining"]) - taken.get(lot["id"], 0)) > 0
                and not _expired(lot, now)
            ]
            post = {"paid": paid - remaining, "promo": sum(lot["amountRemaining"] for lot in kept)}
            whole = {**wallet, "paidBalance": post["paid"], "promoBalance": post["promo"], "promoLots": kept}
            tx.set(wallet_ref, whole | {"updatedAt": now}, merge=True)  # the whole wallet, merged
            entry: Doc = {"type": "debit", "channel": "paid" if remaining > 0 else "promo", "amount": cost}
            entry |= {"action": action, "actionId": action_id, "pre": {"paid": paid, "promo": promo}}
            entry |= {"post": post, "consumedLots": consumed, "createdAt": now, "createdBy": uid, "v": 1}
            tx.set(entry_ref, entry)
            return entry

        return await self._run(work)

    async def preview_spend(self, uid: str, cost: int) -> Doc:
        """What spend would take, counting expired lots too (it writes via `get_wallet`)."""
        paid, promo, lots = _balances(await self.get_wallet(uid))
        remaining = cost
        for lot in lots:  # no expiry check here, unlike spend
            remaining -= min(remaining, int(lot["amountRemaining"]))
        from_promo = cost - remaining
        return {
            "pre": {"paid": paid, "promo": promo},
            "post": {"paid": paid - remaining, "promo": promo - from_promo},
            "fromPromo": from_promo,
            "fromPaid": remaining,
            "ok": remaining <= paid,
        }

    async def credit(
        self, uid: str, kind: str, amount: int, source: str, action_id: str, expires_at: Expiry = None
    ) -> Doc:
        """Credit `amount` as `paid` or as a new `promo` lot (which needs `expires_at`); returns the entry."""
        if kind not in ("paid", "promo"):
            raise ValueError(f"unknown credit kind {kind!r}")
        if kind == "promo" and expires_at is None:
            raise AppError(PROMO_REQUIRES_EXPIRY)
        wallet_ref, entry_ref = self._wallet_ref(uid), self._entry_ref(uid, action_id)

        async def work(tx: AsyncTransaction) -> Doc:
            wallet_snap, entry_snap = await self._read(tx, wallet_ref, entry_ref)
            if entry_snap.exists:
                return entry_snap.to_dict() or {}
            wallet = wallet_snap.to_dict() or {}
            paid, promo, lots = _balances(wallet)
            now = self._clock()
            entry: Doc = {"type": "credit", "channel": kind, "amount": amount, "action": f"credit.{source}"}
            entry |= {"actionId": action_id, "pre": {"paid": paid, "promo": promo}}
            fields: Doc = {"updatedAt": now}
            if not wallet_snap.exists:
                fields |= {"paidBalance": 0, "promoBalance": 0, "promoLots": [], "createdAt": now, "v": 1}
            if kind == "paid":
                post = {"paid": paid + amount, "promo": promo}
                fields["paidBalance"] = post["paid"]
            else:
                lot = {"id": str(uuid.uuid4()), "amountRemaining": amount, "expiresAt": expires_at}
                lots = sorted([*lots, {**lot, "source": source}], key=lambda each: each["expiresAt"])
                post = {"paid": paid, "promo": sum(int(each["amountRemaining"]) for each in lots)}
                fields |= {"promoLots": lots, "promoBalance": post["promo"]}
                entry["creditLot"] = {"lotId": lot["id"], "amount": amount, "expiresAt": expires_at}
            tx.set(wallet_ref, fields, merge=True)
            entry |= {"post": post, "createdAt": now, "createdBy": uid, "v": 1}
            tx.set(entry_ref, entry)
            return entry

        return await self._run(work)

    async def get_ledger(self, uid: str, limit: int = 50, cursor: str | None = None) -> list[Doc]:
        """Raw ledger documents, newest first by `createdAt`, each with its id under `id`.

        `cursor` is the id of the last entry of the previous page.
        """
        ledger = self._db.collection("users", uid, "ledger")
        query = ledger.order_by("createdAt", direction=Query.DESCENDING)
        if cursor:
            last = await ledger.document(cursor).get()
            if last.exists:
                query = query.start_after(last)
        return [{**(snap.to_dict() or {}), "id": snap.id} for snap in await query.limit(limit).get()]

    async def _run(self, fn: Callable[[AsyncTransaction], Awaitable[T]]) -> T:
        """Node's runTransaction: fresh transaction per attempt, retryable errors retried with backoff."""
        initial, cap = self._backoff_s
        delay = 0.0
        for attempt in range(1, self._attempts + 1):
            try:
                return await async_transactional(fn)(self._db.transaction(max_attempts=1))
            except AppError:
                raise
            except Exception as exc:
                if attempt >= self._attempts or not _retryable(exc):
                    raise
                if self._on_retry is not None:
                    self._on_retry(exc)
            delay = min(max(delay * _BACKOFF_FACTOR, initial), cap)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    async def _read(self, tx: AsyncTransaction, *refs: Any) -> list[Any]:
        # AsyncTransaction.get() awaits a generator in this client version: read through get_all.
        snaps = {snap.reference.path: snap async for snap in self._db.get_all(list(refs), transaction=tx)}
        return [snaps[ref.path] for ref in refs]

    def _wallet_ref(self, uid: str) -> Any:
        return self._db.document("users", uid, "wallet", "points")

    def _entry_ref(self, uid: str, action_id: str) -> Any:
        return self._db.document("users", uid, "ledger", action_id)


def _balances(wallet: Mapping[str, Any]) -> tuple[int, int, list[Doc]]:
    """Stored paid and promo balances, and the lots by earliest expiry."""
    lots = sorted((dict(lot) for lot in wallet.get("promoLots") or []), key=lambda lot: lot["expiresAt"])
    return int(wallet.get("paidBalance") or 0), int(wallet.get("promoBalance") or 0), lots


def _expired(lot: Mapping[str, Any], now: datetime) -> bool:
    return bool(lot["expiresAt"] <= now)


def _retryable(exc: BaseException) -> bool:
    """A retryable status, a lock timeout or a failed commit, anywhere in the exception's chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if isinstance(current, _RETRYABLE) or "Transaction lock timeout" in text:
            return True
        if isinstance(current, ValueError) and text.startswith("Failed to commit transaction"):
            return True
        current = current.__cause__ or current.__context__
    return False
