import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    KIND_PAID: _ClassVar[Kind]
    KIND_PROMO: _ClassVar[Kind]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_CREDIT: _ClassVar[Action]
    ACTION_REVERSAL: _ClassVar[Action]
    ACTION_DEBIT: _ClassVar[Action]
    ACTION_OTHER: _ClassVar[Action]
KIND_UNSPECIFIED: Kind
KIND_PAID: Kind
KIND_PROMO: Kind
ACTION_UNSPECIFIED: Action
ACTION_CREDIT: Action
ACTION_REVERSAL: Action
ACTION_DEBIT: Action
ACTION_OTHER: Action

class Points(_message.Message):
    __slots__ = ("paid", "promo")
    PAID_FIELD_NUMBER: _ClassVar[int]
    PROMO_FIELD_NUMBER: _ClassVar[int]
    paid: int
    promo: int
    def __init__(self, paid: _Optional[int] = ..., promo: _Optional[int] = ...) -> None: ...

class PromoLot(_message.Message):
    __slots__ = ("id", "amount_remaining", "expires_at", "source", "expired")
    ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_REMAINING_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    id: str
    amount_remaining: int
    expires_at: _timestamp_pb2.Timestamp
    source: str
    expired: bool
    def __init__(self, id: _Optional[str] = ..., amount_remaining: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., expired: _Optional[bool] = ...) -> None: ...

class LotMove(_message.Message):
    __slots__ = ("lot_id", "amount", "expires_at")
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    lot_id: str
    amount: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, lot_id: _Optional[str] = ..., amount: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("entry_id", "uid", "action", "kind", "amount", "source", "pre", "post", "metadata", "created_at", "created_by", "type", "channel", "status", "pre_balance", "post_balance", "delta", "ledger_action", "note", "credit_lot", "consumed_lots", "shape", "unread_fields")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class UnreadFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRE_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    POST_BALANCE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    LEDGER_ACTION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LOT_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_LOTS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    UNREAD_FIELDS_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    uid: str
    action: Action
    kind: Kind
    amount: int
    source: str
    pre: int
    post: int
    metadata: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    type: str
    channel: str
    status: str
    pre_balance: Points
    post_balance: Points
    delta: Points
    ledger_action: str
    note: str
    credit_lot: LotMove
    consumed_lots: _containers.RepeatedCompositeFieldContainer[LotMove]
    shape: str
    unread_fields: _containers.ScalarMap[str, str]
    def __init__(self, entry_id: _Optional[str] = ..., uid: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., kind: _Optional[_Union[Kind, str]] = ..., amount: _Optional[int] = ..., source: _Optional[str] = ..., pre: _Optional[int] = ..., post: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., type: _Optional[str] = ..., channel: _Optional[str] = ..., status: _Optional[str] = ..., pre_balance: _Optional[_Union[Points, _Mapping]] = ..., post_balance: _Optional[_Union[Points, _Mapping]] = ..., delta: _Optional[_Union[Points, _Mapping]] = ..., ledger_action: _Optional[str] = ..., note: _Optional[str] = ..., credit_lot: _Optional[_Union[LotMove, _Mapping]] = ..., consumed_lots: _Optional[_Iterable[_Union[LotMove, _Mapping]]] = ..., shape: _Optional[str] = ..., unread_fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("paid_balance", "promo_balance", "updated_at", "promo_stored", "promo_lots")
    PAID_BALANCE_FIELD_NUMBER: _ClassVar[int]
    PROMO_BALANCE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROMO_STORED_FIELD_NUMBER: _ClassVar[int]
    PROMO_LOTS_FIELD_NUMBER: _ClassVar[int]
    paid_balance: int
    promo_balance: int
    updated_at: _timestamp_pb2.Timestamp
    promo_stored: int
    promo_lots: _containers.RepeatedCompositeFieldContainer[PromoLot]
    def __init__(self, paid_balance: _Optional[int] = ..., promo_balance: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., promo_stored: _Optional[int] = ..., promo_lots: _Optional[_Iterable[_Union[PromoLot, _Mapping]]] = ...) -> None: ...

class CreditPointsRequest(_message.Message):
    __slots__ = ("uid", "amount", "idempotency_key", "source", "kind", "metadata", "expires_at")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    uid: str
    amount: int
    idempotency_key: str
    source: str
    kind: Kind
    metadata: _containers.ScalarMap[str, str]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, uid: _Optional[str] = ..., amount: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., source: _Optional[str] = ..., kind: _Optional[_Union[Kind, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreditPointsResponse(_message.Message):
    __slots__ = ("entry", "balance", "replayed")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    entry: LedgerEntry
    balance: Balance
    replayed: bool
    def __init__(self, entry: _Optional[_Union[LedgerEntry, _Mapping]] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReversePointsRequest(_message.Message):
    __slots__ = ("uid", "original_entry_id", "idempotency_key", "reason")
    UID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    uid: str
    original_entry_id: str
    idempotency_key: str
    reason: str
    def __init__(self, uid: _Optional[str] = ..., original_entry_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReversePointsResponse(_message.Message):
    __slots__ = ("entry", "balance", "replayed")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    entry: LedgerEntry
    balance: Balance
    replayed: bool
    def __init__(self, entry: _Optional[_Union[LedgerEntry, _Mapping]] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: str
    def __init__(self, uid: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("paid_balance", "promo_balance", "updated_at", "promo_stored", "promo_lots")
    PAID_BALANCE_FIELD_NUMBER: _ClassVar[int]
    PROMO_BALANCE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROMO_STORED_FIELD_NUMBER: _ClassVar[int]
    PROMO_LOTS_FIELD_NUMBER: _ClassVar[int]
    paid_balance: int
    promo_balance: int
    updated_at: _timestamp_pb2.Timestamp
    promo_stored: int
    promo_lots: _containers.RepeatedCompositeFieldContainer[PromoLot]
    def __init__(self, paid_balance: _Optional[int] = ..., promo_balance: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., promo_stored: _Optional[int] = ..., promo_lots: _Optional[_Iterable[_Union[PromoLot, _Mapping]]] = ...) -> None: ...

class ListLedgerRequest(_message.Message):
    __slots__ = ("uid", "page_size", "page_token")
    UID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    uid: str
    page_size: int
    page_token: str
    def __init__(self, uid: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLedgerResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
