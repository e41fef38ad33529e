"""One attempt of a read-write transaction over raw gRPC calls (`firestore_wire.py`).

`WireTransaction` is the client's `AsyncTransaction` (so `ref.get(transaction=tx)` and the
client's `get_all(..., transaction=tx)` still work inside it) whose begin, reads, writes,
commit and rollback go out as raw messages: `read_all` reads many documents in one round
trip and decodes them with the client's decoder, `create`/`set`/`update` build their
`Write` as the client would (`firestore_wire_writes.py`; a transform falls back to the
client's builder), and the commit sends them all. The retry policy stays the runner's
(`firestore_transactions.py`): this is one attempt, no retries of its own.

`begin_with_first_read`: the transaction begins with its first `read_all` (BatchGetDocuments
with `new_transaction`, as Firestore's own newer clients do) instead of a BeginTransaction call
of its own: one round trip fewer per transaction, and the same transaction (the reads that begin
it take the same locks). For work whose first read is `read_all`; a client read (`ref.get(
transaction=tx)`) before it fails loudly ("not in progress"), so that work begins as before. A
transaction that read nothing commits its writes as one plain commit, as atomic as a transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.cloud.firestore import AsyncTransaction

from paynow_service.adapters.firestore_wire import FirestoreWire, _Write
from paynow_service.adapters.firestore_wire_writes import create_write, set_write, update_write

T = TypeVar("T")


@dataclass(frozen=True)
class WireSnapshot:
    """A document read in a transaction: what the adapters use of the client's snapshot."""

    reference: Any  # the client's DocumentReference that was read
    data: dict[str, Any] | None  # None: no such document

    @property
    def exists(self) -> bool:
        return self.data is not None

    @property
    def id(self) -> str:
        document_id: str = self.reference.id
        return document_id

    def to_dict(self) -> dict[str, Any] | None:
        """The decoded fields: a fresh dict per read, the caller's to keep or change."""
        return self.data


class WireTransaction(AsyncTransaction):
    def __init__(
        self, wire: FirestoreWire, deadline_s: float, *, begin_with_first_read: bool = False
    ) -> None:
        super().__init__(wire.db, max_attempts=1)
        self._wire = wire
        self._deadline_s = deadline_s
        self._begin_with_first_read = begin_with_first_read
        self._tx_id = b""  # also the client's `_id`, which its own reads in this transaction use

    async def read_all(self, references: Iterable[Any]) -> list[WireSnapshot]:
        """Every document in one round trip, in the order given (missing ones with `exists` False)."""
        refs = list(references)
        names = [ref._document_path for ref in refs]
        if not names:
            return []
        if self._tx_id:
            found = await self._wire.batch_get(names, self._deadline_s, self._tx_id)
        else:
            found, self._tx_id = await self._wire.begin_with_read(names, self._deadline_s)
            self._id = self._tx_id  # type: ignore[assignment]
        return [WireSnapshot(ref, found.get(name)) for ref, name in zip(refs, names, strict=True)]

    def create(self, reference: Any, document_data: dict[str, Any]) -> None:
        write = create_write(reference._document_path, document_data)
        if write is None:
            super().create(reference, document_data)
        else:
            self._add_write_pbs([write])

    def set(self, reference: Any, document_data: dict[str, Any], merge: bool | list[Any] = False) -> None:
        write = set_write(reference._document_path, document_data, merge)
        if write is None:
            super().set(reference, document_data, merge=merge)
        else:
            self._add_write_pbs([write])

    def update(self, reference: Any, field_updates: dict[str, Any], option: Any = None) -> None:
        write = update_write(reference._document_path, field_updates) if option is None else None
        if write is None:
            super().update(reference, field_updates, option=option)
        else:
            self._add_write_pbs([write])

    async def run(self, fn: Callable[[WireTransaction], Awaitable[T]]) -> T:
        """Begin, run `fn`, commit; on any failure, roll back (best effort) and raise the failure."""
        if not self._begin_with_first_read:
            self._tx_id = await self._wire.begin(self._deadline_s)
            self._id = self._tx_id  # type: ignore[assignment]
        try:
            result = await fn(self)
            writes = [w if isinstance(w, _Write) else type(w).pb(w) for w in self._write_pbs]
            if writes or self._tx_id:  # read nothing and wrote nothing: nothing began, nothing to end
                await self._wire.commit(writes, self._deadline_s, self._tx_id)
        except BaseException:
            if self._tx_id:  # nothing to roll back when its first read never began it
                with contextlib.suppress(Exception):  # the failure that matters is the one raised
                    await self._wire.rollback(self._tx_id, self._deadline_s)
            raise
        finally:
            self._clean_up()
        return result
