"""`paynow-service send-test-webhook`: sign and send a realistic PayNow event to a URL.

The payloads come from paynow_service/sample_webhooks.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from paynow_service.config import Settings
from paynow_service.domain.signature import sign
from paynow_service.sample_webhooks import Obj, build_event, flake_id


def send(
    url: str, event: Obj, secret: str, *, timeout: float = 10, client: httpx.Client | None = None
) -> tuple[int, str]:
    """POST `event` signed with `secret` at the current time; return (status, response body)."""
    body = json.dumps(event, separators=(",", ":")).encode("utf-8")
    timestamp = str(int(time.time() * 1000))
    headers = {
        "Content-Type": "application/json",
        "PayNow-Signature": sign(secret, timestamp, body),
        "PayNow-Timestamp": timestamp,
        "User-Agent": "paynow-service send-test-webhook",
    }
    if client is None:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    else:
        response = client.post(url, content=body, headers=headers, timeout=timeout)
    return response.status_code, response.text


def run_cli(settings: Settings, args: Any, *, client: httpx.Client | None = None) -> int:
    """`paynow-service send-test-webhook`: `args` from argparse (url, event_type, uid,
    product_id, order_id, quantity; an optional `secret`).

    Signs with --secret when given, else the first of PAYNOW_WEBHOOK_SECRETS; the URL
    defaults to this machine's webhook on PORT. Prints the answer; exit status 0 for a
    2xx, 1 otherwise, 2 when there is nothing to sign with or the type is unknown.
    """
    secret = getattr(args, "secret", None) or next((s for s in settings.paynow_webhook_secrets if s), "")
    if not secret:
        print("send-test-webhook: no secret: set PAYNOW_WEBHOOK_SECRETS")
        return 2
    url = getattr(args, "url", None) or f"http://127.0.0.1:{settings.port}/api/paynow/webhook"
    event_type = getattr(args, "event_type", None) or getattr(args, "type", None) or "ON_ORDER_COMPLETED"
    try:
        event = build_event(
            event_type,
            uid=getattr(args, "uid", None) or "",
            product_id=getattr(args, "product_id", None) or flake_id(),
            order_id=getattr(args, "order_id", None),
            quantity=getattr(args, "quantity", None) or 1,
        )
    except ValueError as err:
        print(f"send-test-webhook: {err}")
        return 2
    try:
        status, text = send(url, event, secret, client=client)
    except httpx.HTTPError as err:
        print(f"send-test-webhook: {url}: {type(err).__name__}: {err}")
        return 1
    print(f"{event['event_type']} {event['event_id']} -> HTTP {status} {text}")
    return 0 if 200 <= status < 300 else 1
