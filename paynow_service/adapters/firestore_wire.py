"""Firestore's RPCs as raw gRPC calls on the client's own channel, for the hot paths.

The client builds every write as proto-plus messages (Document, Value, Write) through its
field helpers, reads every document back through them, and wraps each call in retry and
timeout layers: for the webhook's one create that costs about twice the CPU of the call
itself, and it is most of the worker's CPU (docs/performance.md, "Raw calls on the hot
path"). Here the protobuf messages are built directly and sent on the channel the client
created, so where and how it connects (credentials, the emulator's header, keep-alives) is
unchanged, and a failure leaves as the same `google.api_core` exception the client raises
(AlreadyExists, Aborted, ServiceUnavailable ...), which `google_errors` classifies as before.
Documents read are decoded by the client's own decoder, so values come back exactly as the
client would give them.

Used by the webhook (a create, merges of top-level fields) and by every transaction
(`firestore_wire_transaction.py`). Everything else keeps using the client.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1 import routing_header
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.types import common, document, write
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.protobuf import struct_pb2, timestamp_pb2

_CommitRequest: Any = firestore_types.CommitRequest.pb()
_CommitResponse: Any = firestore_types.CommitResponse.pb()
_BeginRequest: Any = firestore_types.BeginTransactionRequest.pb()
_BeginResponse: Any = firestore_types.BeginTransactionResponse.pb()
_RollbackRequest: Any = firestore_types.RollbackRequest.pb()
_BatchGetRequest: Any = firestore_types.BatchGetDocumentsRequest.pb()
_BatchGetResponse: Any = firestore_types.BatchGetDocumentsResponse.pb()
_TransactionOptions: Any = common.TransactionOptions.pb()
_Document: Any = document.Document.pb()
_Value: Any = document.Value.pb()
_MapValue: Any = document.MapValue.pb()
_ArrayValue: Any = document.ArrayValue.pb()
_Write: Any = write.Write.pb()
_Precondition: Any = common.Precondition.pb()
_DocumentMask: Any = common.DocumentMask.pb()
SERVICE = "/google.firestore.v1.Firestore/"


def encode_value(value: Any) -> Any:
    """A Python value as a Firestore `Value` message (the types the client's own encoder takes)."""
    if value is None:
        return _Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, bool):  # before int: a bool is an int
        return _Value(boolean_value=value)
    if isinstance(value, int):
        return _Value(integer_value=value)
    if isinstance(value, float):
        return _Value(double_value=value)
    if isinstance(value, str):
        return _Value(string_value=value)
    if isinstance(value, bytes):
        return _Value(bytes_value=value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise TypeError("a naive datetime has no instant: give it a timezone")
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(value)
        return _Value(timestamp_value=stamp)
    if isinstance(value, Mapping):
        return _Value(map_value=_MapValue(fields=encode_fields(value)))
    if isinstance(value, list | tuple):
        return _Value(array_value=_ArrayValue(values=[encode_value(item) for item in value]))
    raise TypeError(f"no Firestore value for {type(value).__name__}")


def encode_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): encode_value(value) for key, value in data.items()}


class FirestoreWire:
    """Commits built by hand, on `db`'s channel (created lazily, inside the serving loop)."""

    def __init__(self, db: firestore.AsyncClient) -> None:
        self.db = db
        self._database: str = db._database_string
        # The client's own (resource prefix; the emulator's owner token) and the routing header.
        self._metadata = (
            *db._rpc_metadata,
            routing_header.to_grpc_metadata((("database", self._database),)),  # type: ignore[no-untyped-call]
        )
        self._stubs: dict[str, Any] = {}  # made on first use, inside the loop the channel serves

    def name(self, collection: str, document_id: str) -> str:
        return f"{self._database}/documents/{collection}/{document_id}"

    async def create(
        self, collection: str, document_id: str, data: Mapping[str, Any], deadline_s: float
    ) -> None:
        """Create the document; `google.api_core.exceptions.AlreadyExists` if it exists."""
        doc = _Document(name=self.name(collection, document_id), fields=encode_fields(data))
        await self._send([_Write(update=doc, current_document=_Precondition(exists=False))], deadline_s)

    async def merge(
        self, collection: str, updates: Sequence[tuple[str, Mapping[str, Any]]], deadline_s: float
    ) -> None:
        """Merge top-level fields into each document (created if missing), all in one commit.

        As the client's `set(..., merge=True)` for fields whose values are not maps (a map would
        be merged leaf by leaf there, and replaced here: refused instead).
        """
        writes = []
        for document_id, fields in updates:
            if any(isinstance(value, Mapping) for value in fields.values()):
                raise TypeError("merge() takes top-level fields only, not maps")
            mask = _DocumentMask(field_paths=[FieldPath(key).to_api_repr() for key in fields])
            doc = _Document(name=self.name(collection, document_id), fields=encode_fields(fields))
            writes.append(_Write(update=doc, update_mask=mask))
        await self._send(writes, deadline_s)

    async def commit(self, writes: list[Any], deadline_s: float, transaction: bytes = b"") -> None:
        """Commit `writes` (raw `Write` messages), in `transaction` when one is given."""
        request = _CommitRequest(database=self._database, writes=writes, transaction=transaction)
        await self._call("Commit", _CommitRequest, _CommitResponse, request, deadline_s)

    async def begin(self, deadline_s: float) -> bytes:
        """A new read-write transaction's id."""
        options = _TransactionOptions(read_write=_TransactionOptions.ReadWrite())
        request = _BeginRequest(database=self._database, options=options)
        response = await self._call("BeginTransaction", _BeginRequest, _BeginResponse, request, deadline_s)
        transaction: bytes = response.transaction
        return transaction

    async def rollback(self, transaction: bytes, deadline_s: float) -> None:
        request = _RollbackRequest(database=self._database, transaction=transaction)
        await self._call("Rollback", _RollbackRequest, None, request, deadline_s)

    async def batch_get(
        self, names: list[str], deadline_s: float, transaction: bytes = b""
    ) -> dict[str, dict[str, Any] | None]:
        """Each document's data by its full name (None: missing), decoded as the client decodes it."""
        if not names:
            return {}
        found, _ = await self._batch_get(names, deadline_s, transaction=transaction)
        return found

    async def begin_with_read(
        self, names: list[str], deadline_s: float
    ) -> tuple[dict[str, dict[str, Any] | None], bytes]:
        """Begin a read-write transaction with its first read (`new_transaction`): the documents, as
        `batch_get` gives them, and the new transaction's id. One round trip instead of two."""
        options = _TransactionOptions(read_write=_TransactionOptions.ReadWrite())
        found, transaction = await self._batch_get(names, deadline_s, new_transaction=options)
        if not transaction:  # never so on Firestore or its emulator: a transaction without an id is none
            raise gexc.ServiceUnavailable("BatchGetDocuments began no transaction")  # type: ignore[no-untyped-call]
        return found, transaction

    async def _batch_get(
        self, names: list[str], deadline_s: float, *, transaction: bytes = b"", new_transaction: Any = None
    ) -> tuple[dict[str, dict[str, Any] | None], bytes]:
        found: dict[str, dict[str, Any] | None] = {}
        began = b""
        request = _BatchGetRequest(database=self._database, documents=names)
        # `transaction` and `new_transaction` are one oneof: an empty one set is an invalid transaction.
        if transaction:
            request.transaction = transaction
        elif new_transaction is not None:
            request.new_transaction.CopyFrom(new_transaction)
        stream = self._stub("BatchGetDocuments", _BatchGetRequest, _BatchGetResponse, streaming=True)
        try:
            async for response in stream(request, metadata=self._metadata, timeout=deadline_s):
                if response.transaction:  # the first response, when it began one
                    began = response.transaction
                if response.HasField("found"):
                    doc = response.found
                    found[doc.name] = dict(_helpers.decode_dict(doc.fields, self.db))  # type: ignore[arg-type]
                elif response.missing:
                    found[response.missing] = None
        except grpc.RpcError as err:
            raise gexc.from_grpc_error(err) from err  # type: ignore[no-untyped-call]
        return found, began

    async def _send(self, writes: list[Any], deadline_s: float) -> None:
        await self.commit(writes, deadline_s)

    def _stub(self, method: str, request: Any, response: Any, *, streaming: bool = False) -> Any:
        stub = self._stubs.get(method)
        if stub is None:
            channel = self.db._firestore_api.transport.grpc_channel
            make = channel.unary_stream if streaming else channel.unary_unary
            stub = self._stubs[method] = make(
                SERVICE + method,
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString if response is not None else None,
            )
        return stub

    async def _call(
        self, method: str, request_type: Any, response_type: Any, request: Any, deadline_s: float
    ) -> Any:
        stub = self._stub(method, request_type, response_type)
        try:
            return await stub(request, metadata=self._metadata, timeout=deadline_s)
        except grpc.RpcError as err:
            raise gexc.from_grpc_error(err) from err  # type: ignore[no-untyped-call]
