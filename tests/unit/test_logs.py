"""JSON log lines: Cloud Logging's shape, and no secrets or tokens ever."""

from __future__ import annotations

import json
import logging

from paynow_service.logs import REDACTED, JsonFormatter, redact

SECRET = "pn-" + "0123456789abcdef" * 2


def _format(message: str, **fields: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, message, None, None)
    record.fields = fields
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_severity_is_top_level_with_message_and_fields() -> None:
    entry = _format("Webhook received", component="paynow_webhook", event_id="1", uid=None)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "Webhook received"
    assert entry["component"] == "paynow_webhook"
    assert "uid" not in entry  # None fields are left out


def test_secrets_and_tokens_are_redacted_anywhere() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
    entry = _format(f"secret {SECRET} in message", detail={"nested": SECRET}, auth=f"Bearer {jwt}", token=jwt)
    text = json.dumps(entry)
    assert SECRET not in text
    assert jwt not in text
    assert REDACTED in str(entry["message"])


def test_redact_leaves_ordinary_text() -> None:
    assert redact("order 411486491630370816 for pn-short") == "order 411486491630370816 for pn-short"
