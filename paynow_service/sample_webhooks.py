"""Realistic PayNow webhook payloads, for `send-test-webhook`, the tests and the benchmarks.

Payloads follow PayNow's published webhook schema (every required field, the real
types: flake-id strings, integer cents, ISO date-times) for all 19 event types, with
our uid in `checkout.metadata.uid` (and in each checkout line's metadata) the way the
store's checkout sets it. Personal data uses reserved example values (example.com,
TEST-NET addresses) so a leak in a log is easy to spot and harmless.
"""

from __future__ import annotations

import secrets as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EVENT_TYPES = (
    "ON_ORDER_COMPLETED", "ON_SUBSCRIPTION_ACTIVATED", "ON_SUBSCRIPTION_RENEWED", "ON_SUBSCRIPTION_CANCELED",
    "ON_REFUND", "ON_CHARGEBACK", "ON_CHARGEBACK_CLOSED", "ON_PAYMENT_COMPLETED", "ON_PAYMENT_FAILED",
    "ON_DELIVERY_ITEM_ADDED", "ON_DELIVERY_ITEM_ACTIVATED", "ON_DELIVERY_ITEM_USED",
    "ON_DELIVERY_ITEM_RENEWED", "ON_DELIVERY_ITEM_EXPIRED", "ON_DELIVERY_ITEM_REVOKED",
    "ON_TRIAL_ACTIVATED", "ON_TRIAL_COMPLETED", "ON_TRIAL_CANCELED", "ON_DISCORD_ACCOUNT_LINKED_TO_CHECKOUT",
)  # fmt: skip
_PAYNOW_EPOCH_MS = 1_577_836_800_000  # flake ids count milliseconds from 2020-01-01
Obj = dict[str, Any]


def flake_id() -> str:
    """A fresh id shaped like PayNow's: milliseconds since its epoch, then 22 random bits."""
    return str(((int(time.time() * 1000) - _PAYNOW_EPOCH_MS) << 22) | _random.randbits(22))


def build_event(
    event_type: str,
    *,
    uid: str,
    product_id: str,
    order_id: str | None = None,
    customer_id: str | None = None,
    store_id: str | None = None,
    subscription_id: str | None = None,
    event_id: str | None = None,
    quantity: int = 1,
    price: int = 999,
    billing_cycle_sequence: int = 1,
    status: str | None = None,
    chargeback_status: str | None = None,
) -> Obj:
    """A PayNow webhook payload of `event_type` (any of `EVENT_TYPES`), as a JSON object."""
    if event_type not in _BUILDERS:
        raise ValueError(f"unknown event type {event_type!r}: use one of {', '.join(EVENT_TYPES)}")
    ctx = _Context(
        uid=uid, product_id=product_id, order_id=order_id or flake_id(),
        customer_id=customer_id or flake_id(), store_id=store_id or flake_id(),
        subscription_id=subscription_id or flake_id(), quantity=quantity, price=price,
        cycle=billing_cycle_sequence, status=status, chargeback_status=chargeback_status,
    )  # fmt: skip
    return {"event_type": event_type, "event_id": event_id or flake_id(), "body": _BUILDERS[event_type](ctx)}


@dataclass
class _Context:
    uid: str
    product_id: str
    order_id: str
    customer_id: str
    store_id: str
    subscription_id: str
    quantity: int
    price: int
    cycle: int
    status: str | None
    chargeback_status: str | None
    now: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    checkout_id: str = field(default_factory=flake_id)
    checkout_line_id: str = field(default_factory=flake_id)


def _customer(ctx: _Context) -> Obj:
    return {
        "id": ctx.customer_id,
        "name": "Alex Example",
        "steam": {"id": "76561197960287930", "name": "alex_example", "avatar_url": "https://example.com/a.png"},
        "minecraft": {"id": "069a79f4-44e9-4726-a5be-fca90e38aaf5", "name": "AlexExample",
                      "avatar_url": "https://example.com/m.png"},
        "profile": {"id": "76561197960287930", "platform": "steam", "name": "Alex Example",
                    "avatar_url": "https://example.com/a.png"},
    }  # fmt: skip


def _product(ctx: _Context, *, subscription: bool = False) -> Obj:
    return {
        "id": ctx.product_id, "store_id": ctx.store_id, "version_id": flake_id(), "image_url": None,
        "slug": "points-pack", "name": "Points pack", "description": "Points for the game store",
        "enabled": True, "label": None, "sort_order": 0, "price": ctx.price, "single_game_server_only": False,
        "allow_one_time_purchase": not subscription, "allow_subscription": subscription,
        "subscription_interval_value": 1 if subscription else None,
        "subscription_interval_scale": "month" if subscription else None,
        "remove_after_enabled": False, "remove_after_time_value": None, "remove_after_time_scale": None,
        "tags": [], "tag_names": "", "gameservers": [], "gameserver_names": "", "commands": [],
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z", "metadata": {},
    }  # fmt: skip


def _checkout(ctx: _Context) -> Obj:
    metadata = {"uid": ctx.uid} if ctx.uid else {}
    line = {"id": ctx.checkout_line_id, "product_id": ctx.product_id, "product_version_id": flake_id(),
            "metadata": dict(metadata)}  # fmt: skip
    return {"id": ctx.checkout_id, "metadata": metadata, "lines": [line]}


def _order(ctx: _Context) -> Obj:
    subtotal = ctx.price * ctx.quantity
    line = {
        "id": flake_id(), "checkout_line_id": ctx.checkout_line_id, "product_id": ctx.product_id,
        "product_version_id": flake_id(), "product": _product(ctx), "product_name": "Points pack",
        "product_image_url": None, "subscription_id": None, "subscription_line_id": None,
        "subscription_interval_value": None, "subscription_interval_scale": None, "trial_id": None,
        "gift_to_customer": None, "price": ctx.price, "quantity": ctx.quantity, "discount_amount": 0,
        "subtotal_amount": subtotal, "tax_amount": 0, "total_amount": subtotal,
        "selected_gameserver_id": None,
    }  # fmt: skip
    return {
        "id": ctx.order_id, "store_id": ctx.store_id, "customer": _customer(ctx),
        "checkout_id": ctx.checkout_id,
        "checkout": _checkout(ctx), "subscription_id": None, "applied_coupons": [], "applied_giftcards": [],
        "coupon_id": "0", "type": "one_time", "currency": "USD", "tax_inclusive": True, "tax_amount": 0,
        "discount_amount": 0, "subtotal_amount": subtotal, "total_amount": subtotal, "created_at": ctx.now,
        "completed_at": ctx.now, "billing_name": "Alex Example", "billing_email": "buyer@example.com",
        "billing_address_country": "US", "customer_ip": "203.0.113.7", "giftcard_usage_amount": 0,
        "lines": [line], "product_names": "Points pack", "product_tags": "", "product_gameservers": "",
        "status": ctx.status or "completed",
    }  # fmt: skip


def _subscription(default_status: str) -> Callable[[_Context], Obj]:
    def build(ctx: _Context) -> Obj:
        amounts = {
            "subtotal_amount": ctx.price,
            "tax_amount": 0,
            "discount_amount": 0,
            "total_amount": ctx.price,
        }
        initial = {f"initial_{k}": v for k, v in amounts.items()} | {"initial_giftcard_usage_amount": 0}
        line = {
            "id": flake_id(), "subscription_id": ctx.subscription_id,
            "checkout_line_id": ctx.checkout_line_id,
            "initial_order_line_id": None, "gift_to_customer_id": None, "gift_to_customer": None,
            "selected_gameserver_id": None, "sale_id": None, "trial_id": None, "product_id": ctx.product_id,
            "product_version_id": flake_id(), "product_name": "Points plan", "product_image_url": None,
            "product": None, "tax_inclusive": False, "price": ctx.price, "currency": "USD",
            **amounts, **initial,
        }  # fmt: skip
        body = {
            "id": ctx.subscription_id, "store_id": ctx.store_id, "customer_id": ctx.customer_id,
            "customer": _customer(ctx), "checkout": _checkout(ctx), "billing_cycle_sequence": ctx.cycle,
            "billing_email": "buyer@example.com", **amounts, "currency": "USD", "interval_value": 1,
            "interval_scale": "month", "product_id": ctx.product_id, "product_version_id": flake_id(),
            "product_name": "Points plan", "product_image_url": None,
            "product": _product(ctx, subscription=True),
            "billing_country": "US", **initial, "customer_ip": "203.0.113.7",
            "current_period_start": ctx.now, "current_period_end": "2099-01-01T00:00:00Z",
            "created_at": ctx.now,
            "active_at": ctx.now, "checkout_id": ctx.checkout_id, "checkout_line_id": ctx.checkout_line_id,
            "status": ctx.status or default_status, "lines": [line],
        }  # fmt: skip
        if default_status == "canceled":
            body |= {"canceled_at": ctx.now, "cancel_reason": "customer_request"}
        return body

    return build


def _money(ctx: _Context, status: str) -> Obj:
    """The fields payments, refunds and chargebacks share."""
    return {
        "id": flake_id(), "store_id": ctx.store_id, "order_id": ctx.order_id, "customer": _customer(ctx),
        "gateway": "stripe", "currency": "USD", "tax_inclusive": True, "amount": ctx.price * ctx.quantity,
        "gateway_fee_amount": 30, "tax_amount": 0, "platform_fee_amount": 50,
        "store_net_amount": max(0, ctx.price * ctx.quantity - 80), "status": ctx.status or status,
    }  # fmt: skip


def _refund(ctx: _Context) -> Obj:
    times = dict.fromkeys(("created_at", "approved_at", "pending_at", "completed_at"), ctx.now)
    refund = {
        "payment_id": flake_id(), "customer": None, "store_refund_amount": ctx.price * ctx.quantity,
        "billing_email": "buyer@example.com",
    }  # fmt: skip
    return _money(ctx, "completed") | refund | times


def _chargeback(status: str, outcome: str) -> Callable[[_Context], Obj]:
    def build(ctx: _Context) -> Obj:
        return _money(ctx, status) | {
            "chargeback_status": ctx.chargeback_status or outcome,
            "chargeback_at": ctx.now,
        }

    return build


def _payment(ctx: _Context, failed: bool) -> Obj:
    if failed:
        extra = {"failure_code": "insufficient_funds", "failed_at": ctx.now}
    else:
        extra = {"billing_country": "US", "completed_at": ctx.now}
    body = _money(ctx, "failed" if failed else "completed") | {"created_at": ctx.now, "pending_at": None}
    return body | extra


def _delivery_item(state: str) -> Callable[[_Context], Obj]:
    def build(ctx: _Context) -> Obj:
        return {
            "id": flake_id(), "store_id": ctx.store_id, "customer": _customer(ctx),
            "order_customer_id": ctx.customer_id, "checkout_id": ctx.checkout_id, "order_id": ctx.order_id,
            "order_line_id": flake_id(), "subscription_id": None, "execute_on_gameserver_id": None,
            "execute_on_gameserver": None, "product_id": ctx.product_id, "product_version_id": flake_id(),
            "product": _product(ctx), "state": state, "added_at": ctx.now, "active_at": ctx.now,
            "expires_at": None, "removed_at": None, "revoked_at": ctx.now if state == "revoked" else None,
            "revoke_reason": "chargeback" if state == "revoked" else None,
        }  # fmt: skip

    return build


def _trial(status: str) -> Callable[[_Context], Obj]:
    def build(ctx: _Context) -> Obj:
        return {
            "id": flake_id(), "store_id": ctx.store_id, "customer_id": ctx.customer_id,
            "customer": _customer(ctx), "checkout_id": ctx.checkout_id,
            "checkout_line_id": ctx.checkout_line_id, "product_id": ctx.product_id,
            "product_version_id": flake_id(), "product_name": "Points plan", "product_image_url": None,
            "period_value": 7, "period_scale": "day", "starts_at": ctx.now, "ends_at": None,
            "status": ctx.status or status, "created_at": ctx.now,
            "canceled_at": ctx.now if status == "canceled" else None,
        }  # fmt: skip

    return build


def _discord_linked(ctx: _Context) -> Obj:
    return {
        "store_id": ctx.store_id, "customer_id": ctx.customer_id, "customer": _customer(ctx),
        "checkout_id": ctx.checkout_id, "checkout_line_id": ctx.checkout_line_id, "order_id": ctx.order_id,
        "order": _order(ctx), "discord_user_id": "123456789012345678", "discord_user_name": "alex_example",
        "discord_user_avatar_hash": "a1b2c3d4e5f6", "product_id": ctx.product_id,
        "product_version_id": flake_id(), "product": _product(ctx), "enqueued_at": ctx.now,
    }  # fmt: skip


_BUILDERS: dict[str, Callable[[_Context], Obj]] = {
    "ON_ORDER_COMPLETED": _order,
    "ON_SUBSCRIPTION_ACTIVATED": _subscription("active"),
    "ON_SUBSCRIPTION_RENEWED": _subscription("active"),
    "ON_SUBSCRIPTION_CANCELED": _subscription("canceled"),
    "ON_REFUND": _refund,
    "ON_CHARGEBACK": _chargeback("open", "needs_response"),
    "ON_CHARGEBACK_CLOSED": _chargeback("closed", "won"),
    "ON_PAYMENT_COMPLETED": lambda ctx: _payment(ctx, failed=False),
    "ON_PAYMENT_FAILED": lambda ctx: _payment(ctx, failed=True),
    "ON_DELIVERY_ITEM_ADDED": _delivery_item("usable"),
    "ON_DELIVERY_ITEM_ACTIVATED": _delivery_item("active"),
    "ON_DELIVERY_ITEM_USED": _delivery_item("used"),
    "ON_DELIVERY_ITEM_RENEWED": _delivery_item("active"),
    "ON_DELIVERY_ITEM_EXPIRED": _delivery_item("expired"),
    "ON_DELIVERY_ITEM_REVOKED": _delivery_item("revoked"),
    "ON_TRIAL_ACTIVATED": _trial("active"),
    "ON_TRIAL_COMPLETED": _trial("completed"),
    "ON_TRIAL_CANCELED": _trial("canceled"),
    "ON_DISCORD_ACCOUNT_LINKED_TO_CHECKOUT": _discord_linked,
}
