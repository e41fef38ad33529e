"""Ledger documents in every shape the shared users/{uid}/ledger collection holds.

Written from the contract of the app that spends the points (its points service, its
wallet-ledger service, its old queue worker, its reconciliation), this service's entries
before promo lots, and garbage. Readers of ours must list every one of them and fail on none.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def reference_entries(now: datetime) -> dict[str, dict[str, Any]]:
    """Entry id -> document, oldest first (createdAt one minute apart where there is one)."""

    def at(minutes: int) -> datetime:
        return now - timedelta(minutes=60 - minutes)

    expiry = now + timedelta(days=365)
    return {
        # The app's points service: a promo credit and a spend (positive cost).
        "app-credit-1": {
            "type": "credit",
            "channel": "promo",
            "amount": 40,
            "action": "credit.admin",
            "actionId": "app-credit-1",
            "pre": {"paid": 0, "promo": 0},
            "post": {"paid": 0, "promo": 40},
            "creditLot": {"lotId": "3f1c9a2e-uuid", "amount": 40, "expiresAt": expiry},
            "createdAt": at(1),
            "createdBy": "admin-uid",
            "v": 1,
        },
        "app-spend-1": {
            "type": "debit",
            "channel": "promo",
            "amount": 15,
            "action": "shop.purchase",
            "actionId": "app-spend-1",
            "pre": {"paid": 0, "promo": 40},
            "post": {"paid": 0, "promo": 25},
            "consumedLots": [{"lotId": "3f1c9a2e-uuid", "amount": 15}],
            "createdAt": at(2),
            "createdBy": "user-uid",
            "v": 1,
        },
        # The wallet-ledger service: signed amounts, status, source map; changed in place.
        "wl-purchase": {
            "amount": 500,
            "balanceAfter": 500,
            "currency": "POINTS",
            "kind": "purchase",
            "status": "posted",
            "source": {
                "eventId": "411111111111111111",
                "orderId": "ABC-123",
                "paynowCustomerId": "422222222222222222",
                "productId": "app-product-doc",
                "productVersion": 3,
                "reversalOf": None,
                "reason": None,
            },
            "createdAt": at(3),
            "createdBy": "system:webhook",
        },
        "wl-refund": {
            "amount": -500,
            "balanceAfter": 0,
            "currency": "POINTS",
            "kind": "refund",
            "status": "posted",
            "source": {"eventId": "411111111111111111", "reversalOf": "wl-purchase", "reason": "refund"},
            "createdAt": at(4),
            "createdBy": "system:webhook",
        },
        "wl-hold": {
            "amount": 100,
            "balanceAfter": 100,
            "currency": "POINTS",
            "kind": "promo_credit",
            "status": "hold",
            "source": {"reason": "welcome"},
            "createdAt": at(5),
            "createdBy": "admin:someone",
        },
        "wl-reversed": {
            "amount": 70,
            "balanceAfter": 170,
            "currency": "POINTS",
            "kind": "admin_adjustment",
            "status": "reversed",
            "source": {"reason": "goodwill"},
            "createdAt": at(6),
            "createdBy": "admin:someone",
        },
        # The app's old queue worker: id = event id, integer-free pre/post maps.
        "412345678901234567": {
            "action": "credit",
            "kind": "paid",
            "amount": 250,
            "source": "paynow",
            "pre": {"paid": 0, "promo": 0},
            "post": {"paid": 250, "promo": 0},
            "metadata": {"orderId": "ORD-9", "productId": "pack", "quantity": 1},
            "createdAt": at(7),
        },
        # The app's reconciliation.
        "reconcile-1": {
            "amount": -30,
            "kind": "reconcile_adjustment",
            "source": {"reason": "drift", "reportId": "r-2026-11-30"},
            "createdBy": "system:reconciliation",
            "balanceAfter": 220,
            "currency": "POINTS",
            "createdAt": at(8),
        },
        # This service before promo lots: action/kind, signed amount, integer pre/post.
        "paynow:order:o-old:line:l1": {
            "uid": "x",
            "action": "credit",
            "kind": "promo",
            "amount": 250,
            "source": "paynow",
            "pre": 0,
            "post": 250,
            "metadata": {"orderId": "o-old", "lineId": "l1", "quantity": 1},
            "createdAt": at(9),
            "createdBy": "paynow-service",
            "v": 1,
        },
        # Garbage: wrong types everywhere, a string time, and one with nothing at all.
        "garbage-typed": {
            "amount": "lots",
            "type": 7,
            "pre": [1, 2],
            "delta": {"paid": "x"},
            "consumedLots": "none",
            "metadata": "not a map",
            "createdAt": "yesterday",
            "weird": {"nested": [1, {"x": None}]},
        },
        "garbage-empty": {},
    }
