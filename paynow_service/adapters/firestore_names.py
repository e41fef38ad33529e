"""Firestore's collection and document names, shared with the app: one spelling for every adapter.

Layout: webhookEvents/{event_id}, paynowOrders/{order_id}, paynowCustomers/{customer_id},
ledgerKeys/{entry_id}, users/{uid} with users/{uid}/wallet/points, users/{uid}/ledger/{entry_id}
and users/{uid}/subscriptions/{subscription_id}.
"""

from __future__ import annotations

EVENTS = "webhookEvents"
ORDERS = "paynowOrders"
CUSTOMERS = "paynowCustomers"
LEDGER_KEYS = "ledgerKeys"
USERS = "users"
WALLET = "wallet"  # users/{uid}/wallet
WALLET_DOC = "points"  # users/{uid}/wallet/points: the one wallet document
LEDGER = "ledger"  # users/{uid}/ledger
SUBSCRIPTIONS = "subscriptions"  # users/{uid}/subscriptions


def user_document(path: str, group: str) -> tuple[str, str] | None:
    """(uid, document id) of a `users/{uid}/{group}/{id}` path; None for any other path (a
    collection-group scan also meets documents of that name elsewhere)."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == USERS and parts[2] == group:
        return parts[1], parts[3]
    return None
