"""Realistic PayNow events (`build_event`), each with what it must do (`Expected`).

`EventFactory` draws them from the catalog the service uses: orders of its products, refunds
of earlier orders, subscription activations and renewals, ignored types, and orders of a
product no catalog maps (they must end in the DLQ as unknown_product). A `PlannedEvent`'s
body is encoded once: every delivery of it sends the same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from paynow_loadtest.expectation import Expected
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.events import HANDLED_TYPES
from paynow_service.domain.ledger import order_line_entry_id, reversal_entry_id, subscription_entry_id
from paynow_service.sample_webhooks import EVENT_TYPES, build_event, flake_id

IGNORED_TYPES = tuple(t for t in EVENT_TYPES if t not in HANDLED_TYPES)
UNKNOWN_PRODUCT = "400000000000000001"  # in no catalog


@dataclass
class PlannedEvent:
    """One event: its payload (sent as is, byte for byte, by every delivery) and its effect."""

    event: dict[str, Any]
    body: bytes
    expected: Expected
    order_id: str = ""
    credit_entry: str = ""  # an order's credited entry (refunds reverse it)
    credit_points: int = 0
    product_id: str = ""
    quantity: int = 1
    price: int = 0
    subscription_id: str = ""
    cycle: int = 0

    @property
    def event_id(self) -> str:
        return self.expected.event_id


class EventFactory:
    """Realistic events with their expected effects, from the catalog the service uses."""

    def __init__(self, catalog: Catalog, *, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.products = sorted(catalog.products.items())
        self.plans = sorted(catalog.subscriptions.items())
        if not self.products:
            raise ValueError("the catalog maps no product: nothing to credit")
        if UNKNOWN_PRODUCT in catalog.products:
            raise ValueError(f"the catalog maps {UNKNOWN_PRODUCT}, the load's unknown product")

    @staticmethod
    def _encode(event: dict[str, Any]) -> bytes:
        return json.dumps(event, separators=(",", ":")).encode()

    def order(self, uid: str, *, quantity: int | None = None, product_id: str | None = None) -> PlannedEvent:
        if product_id is None:
            product_id, rule = self.rng.choice(self.products)
        else:
            rule = dict(self.products)[product_id]
        quantity = quantity or self.rng.choice((1, 1, 1, 2, 3))
        price = self.rng.choice((199, 499, 999, 1999))
        event = build_event(
            "ON_ORDER_COMPLETED", uid=uid, product_id=product_id, quantity=quantity, price=price
        )
        body = event["body"]
        entry = order_line_entry_id(body["id"], body["lines"][0]["id"])
        points = rule.points * quantity
        expected = Expected(
            event["event_id"], "order", uid, "processed", {entry: points} if points > 0 else {}
        )
        return PlannedEvent(
            event, self._encode(event), expected, order_id=body["id"], credit_entry=entry,
            credit_points=points, product_id=product_id, quantity=quantity, price=price,
        )  # fmt: skip

    def unknown_product(self, uid: str) -> PlannedEvent:
        event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=UNKNOWN_PRODUCT)
        expected = Expected(
            event["event_id"], "unknown_product", uid, "failed_terminal", reason="unknown_product"
        )
        return PlannedEvent(event, self._encode(event), expected, order_id=event["body"]["id"])

    def refund(self, order: PlannedEvent) -> PlannedEvent:
        """ON_REFUND `completed` of an earlier order: reverses its credit once."""
        event = build_event(
            "ON_REFUND", uid=order.expected.uid, product_id=order.product_id, order_id=order.order_id,
            quantity=order.quantity, price=order.price, status="completed",
        )  # fmt: skip
        entries = {reversal_entry_id(order.credit_entry): -order.credit_points} if order.credit_points else {}
        expected = Expected(event["event_id"], "refund", order.expected.uid, "processed", entries)
        return PlannedEvent(event, self._encode(event), expected, order_id=order.order_id)

    def subscription(self, uid: str, *, renew_of: PlannedEvent | None = None) -> PlannedEvent:
        """ON_SUBSCRIPTION_ACTIVATED (cycle 1), or ON_SUBSCRIPTION_RENEWED (next cycle) of `renew_of`."""
        if not self.plans:
            raise ValueError("the catalog has no subscription plan")
        if renew_of is not None:
            plan_id, sub_id, cycle, kind = (
                renew_of.product_id, renew_of.subscription_id, renew_of.cycle + 1, "ON_SUBSCRIPTION_RENEWED",
            )  # fmt: skip
            uid = renew_of.expected.uid
        else:
            plan_id, sub_id, cycle, kind = (
                self.rng.choice(self.plans)[0],
                flake_id(),
                1,
                "ON_SUBSCRIPTION_ACTIVATED",
            )
        rule = dict(self.plans)[plan_id]
        event = build_event(
            kind, uid=uid, product_id=plan_id, subscription_id=sub_id, billing_cycle_sequence=cycle
        )
        entries = (
            {subscription_entry_id(sub_id, cycle): rule.points_per_cycle} if rule.points_per_cycle else {}
        )
        expected = Expected(event["event_id"], "subscription", uid, "processed", entries)
        return PlannedEvent(
            event, self._encode(event), expected, product_id=plan_id, subscription_id=sub_id, cycle=cycle
        )

    def ignored(self, uid: str, event_type: str | None = None) -> PlannedEvent:
        event_type = event_type or self.rng.choice(IGNORED_TYPES)
        product_id = self.rng.choice(self.products)[0]
        event = build_event(event_type, uid=uid, product_id=product_id)
        expected = Expected(event["event_id"], "ignored", uid, "ignored")
        return PlannedEvent(event, self._encode(event), expected)
