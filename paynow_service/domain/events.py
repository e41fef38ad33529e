"""The domain's view of a PayNow event: what crediting points needs, and nothing else.

Built from a webhook body (domain/paynow.py) or from a Pub/Sub message
(adapters/event_codec.py); both give the same `PaymentEvent`, so sync and queue
modes process identical values. Minimal PII: ids, types, products, amounts, statuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ORDER_COMPLETED = "ON_ORDER_COMPLETED"
SUBSCRIPTION_ACTIVATED = "ON_SUBSCRIPTION_ACTIVATED"
SUBSCRIPTION_RENEWED = "ON_SUBSCRIPTION_RENEWED"
SUBSCRIPTION_CANCELED = "ON_SUBSCRIPTION_CANCELED"
REFUND = "ON_REFUND"
CHARGEBACK = "ON_CHARGEBACK"
CHARGEBACK_CLOSED = "ON_CHARGEBACK_CLOSED"

SUBSCRIPTION_TYPES = frozenset({SUBSCRIPTION_ACTIVATED, SUBSCRIPTION_RENEWED, SUBSCRIPTION_CANCELED})
HANDLED_TYPES = frozenset({ORDER_COMPLETED, REFUND, CHARGEBACK, CHARGEBACK_CLOSED} | SUBSCRIPTION_TYPES)

# Layout version of PaymentEvent carried in the `schema_version` attribute.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class OrderLine:
    line_id: str
    product_id: str
    quantity: int
    price: int
    subscription_id: str = ""
    trial_id: str = ""
    uid: str = ""  # the checkout line's metadata.uid, when present

    @property
    def credited_by_order(self) -> bool:
        """Subscription and trial lines get their points from the subscription events."""
        return not (self.subscription_id or self.trial_id)


@dataclass(frozen=True)
class Order:
    order_id: str
    lines: tuple[OrderLine, ...]
    currency: str = ""
    total_amount: int = 0
    status: str = ""


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    product_id: str
    billing_cycle_sequence: int
    status: str = ""
    current_period_end_ms: int = 0
    price: int = 0
    currency: str = ""


@dataclass(frozen=True)
class Refund:
    refund_id: str
    order_id: str
    status: str
    amount: int = 0
    store_refund_amount: int = 0


@dataclass(frozen=True)
class Chargeback:
    chargeback_id: str
    order_id: str
    status: str = ""
    chargeback_status: str = ""
    amount: int = 0


@dataclass(frozen=True)
class PaymentEvent:
    """One PayNow event. Exactly one of order / subscription / refund / chargeback is set
    for the handled types; none for the types the service acknowledges and ignores."""

    event_id: str
    event_type: str
    uid: str = ""
    customer_id: str = ""
    store_id: str = ""
    received_at_ms: int = 0
    sent_at_ms: int = 0
    order: Order | None = None
    subscription: Subscription | None = None
    refund: Refund | None = None
    chargeback: Chargeback | None = None
    schema_version: int = SCHEMA_VERSION
    ordering_key: str = field(default="")
    # SHA-256 of the webhook body's canonical JSON (webhookEvents.payloadHash), set by the webhook:
    # the worker refuses an event whose hash differs from its record's ("" : not checked).
    payload_hash: str = ""

    @property
    def ignored(self) -> bool:
        return self.event_type not in HANDLED_TYPES

    def resolved_ordering_key(self) -> str:
        """SPEC section 4: the uid, else customer:<id>, else event:<id> (never one shared lane)."""
        if self.ordering_key:
            return self.ordering_key
        if self.uid:
            return self.uid
        if self.customer_id:
            return f"customer:{self.customer_id}"
        return f"event:{self.event_id}"
