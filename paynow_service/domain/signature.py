"""PayNow webhook signatures: HMAC-SHA256 over `{timestamp}.{raw body}`, base64-encoded.

Verification runs on the raw request bytes before anything parses them, tries every
configured secret (PayNow issues one per event-type subscription, and a list also
gives rotation), compares digests in constant time and refuses timestamps outside the
replay window. Errors carry a fixed, safe detail: never the secret, never the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from paynow_service.domain.errors import SignatureError as SignatureError

SIGNATURE_HEADER = "paynow-signature"
TIMESTAMP_HEADER = "paynow-timestamp"

INVALID_SIGNATURE = SignatureError.reason
INVALID_TIMESTAMP = "invalid_timestamp"

# 16 digits of milliseconds reach the year 318857: anything longer is garbage, and the
# bound keeps int() away from huge inputs.
_MAX_TIMESTAMP_DIGITS = 16
# A base64 SHA-256 digest is 44 characters; the slack tolerates nothing meaningful,
# it only stops us decoding megabytes of header.
_MAX_SIGNATURE_CHARS = 128


def sign(secret: str, timestamp_ms: int | str, body: bytes) -> str:
    """The `PayNow-Signature` value PayNow would send for this timestamp and body."""
    return base64.b64encode(_digest(secret.encode("utf-8"), str(timestamp_ms), body)).decode("ascii")


def verify_signature(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    now_ms: int,
    tolerance_s: int,
) -> int:
    """Check a delivery's signature and freshness; return its timestamp in milliseconds.

    `headers` may be any mapping (a Starlette `Headers` too): names are matched
    case-insensitively because proxies lower-case them. Raises `SignatureError` whose
    `reason` is "invalid_signature" or "invalid_timestamp".
    """
    signature = _header(headers, SIGNATURE_HEADER)
    raw_timestamp = _header(headers, TIMESTAMP_HEADER)
    if signature is None:
        raise SignatureError("missing PayNow-Signature header", reason=INVALID_SIGNATURE)
    if raw_timestamp is None:
        raise SignatureError("missing PayNow-Timestamp header", reason=INVALID_TIMESTAMP)
    timestamp = raw_timestamp.strip(" \t")
    timestamp_ms = _parse_timestamp(timestamp)
    provided = _decode_signature(signature)
    keys = [secret.encode("utf-8") for secret in secrets if secret]
    if not keys:
        raise SignatureError("no webhook secret is configured", reason=INVALID_SIGNATURE)
    # Every key is tried even after a match, so timing does not reveal which secret signed.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(_digest(key, timestamp, body), provided)
    if not matched:
        raise SignatureError("signature does not match any configured secret", reason=INVALID_SIGNATURE)
    # Checked after the signature: a forged request is reported as forged, and only a
    # genuine but stale (replayed) or future-dated delivery as a timestamp problem.
    if abs(now_ms - timestamp_ms) > tolerance_s * 1000:
        raise SignatureError(f"timestamp is outside the {tolerance_s} s window", reason=INVALID_TIMESTAMP)
    return timestamp_ms


def _digest(key: bytes, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).digest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The single value of `name`, matched case-insensitively.

    Several different values of one header are ambiguous, so they count as invalid
    rather than picking one (a Starlette `Headers.items()` yields every raw pair).
    """
    values = {value for key, value in headers.items() if isinstance(key, str) and key.lower() == name}
    if not values:
        return None
    if len(values) > 1:
        reason = INVALID_SIGNATURE if name == SIGNATURE_HEADER else INVALID_TIMESTAMP
        raise SignatureError(f"header {name} is repeated with different values", reason=reason)
    value = values.pop()
    if not isinstance(value, str):
        reason = INVALID_SIGNATURE if name == SIGNATURE_HEADER else INVALID_TIMESTAMP
        raise SignatureError(f"header {name} is not text", reason=reason)
    return value


def _parse_timestamp(timestamp: str) -> int:
    # Only ASCII digits: int() would also take "+1_7e", Unicode digits or whitespace,
    # and the signed message uses the header text verbatim.
    if not (0 < len(timestamp) <= _MAX_TIMESTAMP_DIGITS and timestamp.isascii() and timestamp.isdigit()):
        raise SignatureError("PayNow-Timestamp is not Unix time in milliseconds", reason=INVALID_TIMESTAMP)
    return int(timestamp)


def _decode_signature(signature: str) -> bytes:
    value = signature.strip(" \t")
    if not value or len(value) > _MAX_SIGNATURE_CHARS or not value.isascii():
        raise SignatureError("PayNow-Signature is not a base64 digest", reason=INVALID_SIGNATURE)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("PayNow-Signature is not a base64 digest", reason=INVALID_SIGNATURE) from None
