"""The one sender of signed PayNow webhooks, for the tests and the load tool.

A delivery is a body's bytes signed as PayNow signs them at the moment they are sent:
`PayNow-Signature` (base64 HMAC-SHA256 of `{timestamp}.{body}` under the secret, the service's own
`sign`) and `PayNow-Timestamp` (milliseconds). An event given as a dict is encoded compactly, as
`build_event`'s payloads are sent; bytes go out as they are, so a re-delivery re-sends the same
bytes. `post` and `post_async` send one request over httpx; the load tool's lean client sends with
`signed_headers` too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from paynow_service.domain.signature import sign

WEBHOOK_PATH = "/api/paynow/webhook"
USER_AGENT = "paynow-loadtest"
Event = Mapping[str, Any] | bytes


def encode(event: Event) -> bytes:
    """The body of `event`: bytes as they are, a dict as compact JSON."""
    if isinstance(event, bytes):
        return event
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def webhook_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}{WEBHOOK_PATH}"


def signed_headers(secret: str, body: bytes, *, ts_ms: int | None = None) -> dict[str, str]:
    """The headers PayNow sends with `body`, signed with `secret` now (or at `ts_ms`)."""
    stamp = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    return {
        "Content-Type": "application/json",
        "PayNow-Signature": sign(secret, stamp, body),
        "PayNow-Timestamp": stamp,
        "User-Agent": USER_AGENT,
    }


def post(
    url: str, event: Event, secret: str, *, client: httpx.Client | None = None, timeout: float = 15,
    ts_ms: int | None = None,
) -> httpx.Response:  # fmt: skip
    """POST `event` signed with `secret`; the answer, whatever its status."""
    body = encode(event)
    headers = signed_headers(secret, body, ts_ms=ts_ms)
    if client is None:
        return httpx.post(url, content=body, headers=headers, timeout=timeout)
    return client.post(url, content=body, headers=headers, timeout=timeout)


async def post_async(
    client: httpx.AsyncClient, url: str, event: Event, secret: str, *, ts_ms: int | None = None
) -> httpx.Response:
    """`post` on an AsyncClient (its own timeout applies)."""
    body = encode(event)
    return await client.post(url, content=body, headers=signed_headers(secret, body, ts_ms=ts_ms))
