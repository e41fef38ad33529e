from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "received_at_ms", "sent_at_ms", "uid", "customer_id", "store_id", "ordering_key", "schema_version", "payload_hash", "order", "subscription", "refund", "chargeback")
    class OrderLine(_message.Message):
        __slots__ = ("line_id", "product_id", "quantity", "price", "subscription_id", "trial_id", "uid")
        LINE_ID_FIELD_NUMBER: _ClassVar[int]
        PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
        QUANTITY_FIELD_NUMBER: _ClassVar[int]
        PRICE_FIELD_NUMBER: _ClassVar[int]
        SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
        TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
        UID_FIELD_NUMBER: _ClassVar[int]
        line_id: str
        product_id: str
        quantity: int
        price: int
        subscription_id: str
        trial_id: str
        uid: str
        def __init__(self, line_id: _Optional[str] = ..., product_id: _Optional[str] = ..., quantity: _Optional[int] = ..., price: _Optional[int] = ..., subscription_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., uid: _Optional[str] = ...) -> None: ...
    class Order(_message.Message):
        __slots__ = ("order_id", "lines", "currency", "total_amount", "status")
        ORDER_ID_FIELD_NUMBER: _ClassVar[int]
        LINES_FIELD_NUMBER: _ClassVar[int]
        CURRENCY_FIELD_NUMBER: _ClassVar[int]
        TOTAL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
        STATUS_FIELD_NUMBER: _ClassVar[int]
        order_id: str
        lines: _containers.RepeatedCompositeFieldContainer[PaymentEvent.OrderLine]
        currency: str
        total_amount: int
        status: str
        def __init__(self, order_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[PaymentEvent.OrderLine, _Mapping]]] = ..., currency: _Optional[str] = ..., total_amount: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...
    class Subscription(_message.Message):
        __slots__ = ("subscription_id", "product_id", "billing_cycle_sequence", "status", "current_period_end_ms", "price", "currency")
        SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
        PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
        BILLING_CYCLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
        STATUS_FIELD_NUMBER: _ClassVar[int]
        CURRENT_PERIOD_END_MS_FIELD_NUMBER: _ClassVar[int]
        PRICE_FIELD_NUMBER: _ClassVar[int]
        CURRENCY_FIELD_NUMBER: _ClassVar[int]
        subscription_id: str
        product_id: str
        billing_cycle_sequence: int
        status: str
        current_period_end_ms: int
        price: int
        currency: str
        def __init__(self, subscription_id: _Optional[str] = ..., product_id: _Optional[str] = ..., billing_cycle_sequence: _Optional[int] = ..., status: _Optional[str] = ..., current_period_end_ms: _Optional[int] = ..., price: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...
    class Refund(_message.Message):
        __slots__ = ("refund_id", "order_id", "status", "amount", "store_refund_amount")
        REFUND_ID_FIELD_NUMBER: _ClassVar[int]
        ORDER_ID_FIELD_NUMBER: _ClassVar[int]
        STATUS_FIELD_NUMBER: _ClassVar[int]
        AMOUNT_FIELD_NUMBER: _ClassVar[int]
        STORE_REFUND_AMOUNT_FIELD_NUMBER: _ClassVar[int]
        refund_id: str
        order_id: str
        status: str
        amount: int
        store_refund_amount: int
        def __init__(self, refund_id: _Optional[str] = ..., order_id: _Optional[str] = ..., status: _Optional[str] = ..., amount: _Optional[int] = ..., store_refund_amount: _Optional[int] = ...) -> None: ...
    class Chargeback(_message.Message):
        __slots__ = ("chargeback_id", "order_id", "status", "chargeback_status", "amount")
        CHARGEBACK_ID_FIELD_NUMBER: _ClassVar[int]
        ORDER_ID_FIELD_NUMBER: _ClassVar[int]
        STATUS_FIELD_NUMBER: _ClassVar[int]
        CHARGEBACK_STATUS_FIELD_NUMBER: _ClassVar[int]
        AMOUNT_FIELD_NUMBER: _ClassVar[int]
        chargeback_id: str
        order_id: str
        status: str
        chargeback_status: str
        amount: int
        def __init__(self, chargeback_id: _Optional[str] = ..., order_id: _Optional[str] = ..., status: _Optional[str] = ..., chargeback_status: _Optional[str] = ..., amount: _Optional[int] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    ORDERING_KEY_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_HASH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    CHARGEBACK_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    received_at_ms: int
    sent_at_ms: int
    uid: str
    customer_id: str
    store_id: str
    ordering_key: str
    schema_version: int
    payload_hash: str
    order: PaymentEvent.Order
    subscription: PaymentEvent.Subscription
    refund: PaymentEvent.Refund
    chargeback: PaymentEvent.Chargeback
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., received_at_ms: _Optional[int] = ..., sent_at_ms: _Optional[int] = ..., uid: _Optional[str] = ..., customer_id: _Optional[str] = ..., store_id: _Optional[str] = ..., ordering_key: _Optional[str] = ..., schema_version: _Optional[int] = ..., payload_hash: _Optional[str] = ..., order: _Optional[_Union[PaymentEvent.Order, _Mapping]] = ..., subscription: _Optional[_Union[PaymentEvent.Subscription, _Mapping]] = ..., refund: _Optional[_Union[PaymentEvent.Refund, _Mapping]] = ..., chargeback: _Optional[_Union[PaymentEvent.Chargeback, _Mapping]] = ...) -> None: ...
