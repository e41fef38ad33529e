"""PayNow webhook signatures: HMAC-SHA256 of `{timestamp}.{body}`, several secrets, a replay window."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paynow_service.config import Settings
from paynow_service.domain.signature import SignatureError, sign, verify_signature
from paynow_service.entrypoints.send_test_webhook import run_cli, send
from paynow_service.sample_webhooks import build_event

NOW = 1_717_000_000_000
TOLERANCE = 300
SECRETS = ("pn-0123456789abcdef0123456789abcdef", "pn-fedcba9876543210fedcba9876543210", "pn-third")
BODY = b'{"event_type":"ON_ORDER_COMPLETED","event_id":"411486491630370816","body":{}}'


def headers_for(body: bytes = BODY, secret: str = SECRETS[0], ts: int = NOW) -> dict[str, str]:
    return {"PayNow-Signature": sign(secret, ts, body), "PayNow-Timestamp": str(ts)}


def verify(headers: dict[str, str], body: bytes = BODY, secrets: tuple[str, ...] = SECRETS) -> int:
    return verify_signature(headers, body, secrets, now_ms=NOW, tolerance_s=TOLERANCE)


def test_sign_matches_the_documented_formula() -> None:
    expected = hmac.new(SECRETS[0].encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(SECRETS[0], NOW, BODY) == base64.b64encode(expected).decode()


@pytest.mark.parametrize("secret", SECRETS)
def test_each_configured_secret_verifies(secret: str) -> None:
    assert verify(headers_for(secret=secret)) == NOW


def test_wrong_secret_is_invalid_signature() -> None:
    with pytest.raises(SignatureError) as err:
        verify(headers_for(secret="pn-not-ours"))
    assert err.value.reason == "invalid_signature"


def test_tampered_body_is_invalid_signature() -> None:
    headers = headers_for()
    with pytest.raises(SignatureError) as err:
        verify(headers, BODY.replace(b"411486491630370816", b"411486491630370817"))
    assert err.value.reason == "invalid_signature"


def test_signature_binds_the_timestamp() -> None:
    headers = headers_for()
    headers["PayNow-Timestamp"] = str(NOW + 1)
    with pytest.raises(SignatureError) as err:
        verify(headers)
    assert err.value.reason == "invalid_signature"


def test_missing_signature_header() -> None:
    with pytest.raises(SignatureError) as err:
        verify({"PayNow-Timestamp": str(NOW)})
    assert err.value.reason == "invalid_signature"


def test_missing_timestamp_header() -> None:
    with pytest.raises(SignatureError) as err:
        verify({"PayNow-Signature": sign(SECRETS[0], NOW, BODY)})
    assert err.value.reason == "invalid_timestamp"


@pytest.mark.parametrize("transform", [str.lower, str.upper, lambda name: name.title()])
def test_header_names_are_case_insensitive(transform: object) -> None:
    assert callable(transform)
    headers = {transform(k): v for k, v in headers_for().items()}
    assert verify(headers) == NOW


def test_repeated_header_with_different_values_is_refused() -> None:
    class MultiHeaders(dict[str, str]):
        def items(self):  # type: ignore[override]
            return [*super().items(), ("paynow-signature", "AAAA")]

    with pytest.raises(SignatureError) as err:
        verify(MultiHeaders(headers_for()))
    assert err.value.reason == "invalid_signature"


@pytest.mark.parametrize("offset_ms", [-360_000, 360_000])
def test_timestamps_six_minutes_old_or_ahead_are_refused(offset_ms: int) -> None:
    ts = NOW + offset_ms
    with pytest.raises(SignatureError) as err:
        verify(headers_for(ts=ts))
    assert err.value.reason == "invalid_timestamp"


@pytest.mark.parametrize("offset_ms", [-300_000, 0, 300_000, -299_999])
def test_timestamps_inside_the_window_pass(offset_ms: int) -> None:
    assert verify(headers_for(ts=NOW + offset_ms)) == NOW + offset_ms


def test_timestamp_in_seconds_is_outside_the_window() -> None:
    # A sender using seconds instead of milliseconds looks like 1970 in ms.
    with pytest.raises(SignatureError) as err:
        verify(headers_for(ts=NOW // 1000))
    assert err.value.reason == "invalid_timestamp"


@pytest.mark.parametrize(
    "timestamp",
    [
        "",
        "abc",
        "-1717000000000",
        "+1717000000000",
        "1_717_000_000_000",
        "1.7e12",
        "\uff11\uff17\uff11\uff17",  # full-width digits: str.isdigit() says yes
        "9" * 40,
        "1717\x00",
    ],
)
def test_garbage_timestamps_are_invalid_timestamp(timestamp: str) -> None:
    headers = {"PayNow-Signature": sign(SECRETS[0], NOW, BODY), "PayNow-Timestamp": timestamp}
    with pytest.raises(SignatureError) as err:
        verify(headers)
    assert err.value.reason == "invalid_timestamp"


@pytest.mark.parametrize("signature", ["", "not base64!", "é" * 44, "A" * 5000, "AAAA", "=" * 44, "\x00"])
def test_garbage_signatures_are_invalid_signature(signature: str) -> None:
    with pytest.raises(SignatureError) as err:
        verify({"PayNow-Signature": signature, "PayNow-Timestamp": str(NOW)})
    assert err.value.reason == "invalid_signature"


@pytest.mark.parametrize("secrets", [(), ("",), ("", "")])
def test_no_usable_secret_is_invalid_signature(secrets: tuple[str, ...]) -> None:
    with pytest.raises(SignatureError) as err:
        verify(headers_for(), secrets=secrets)
    assert err.value.reason == "invalid_signature"


def test_empty_secret_entries_are_skipped() -> None:
    assert verify(headers_for(secret=SECRETS[1]), secrets=("", SECRETS[1])) == NOW


def test_non_ascii_secret_and_body_work() -> None:
    body = json.dumps({"note": "Zoë ✓"}, ensure_ascii=False).encode()
    assert verify(headers_for(body, secret="pn-sécret"), body, secrets=("pn-sécret",)) == NOW


def test_error_detail_never_echoes_secret_or_signature() -> None:
    headers = headers_for(secret="pn-attacker-secret")
    for secrets, hdrs in [(SECRETS, headers), ((), headers), (SECRETS, {**headers, "PayNow-Timestamp": "x"})]:
        with pytest.raises(SignatureError) as err:
            verify(hdrs, secrets=secrets)
        text = f"{err.value} {err.value.detail!r} {err.value.args!r}"
        assert headers["PayNow-Signature"] not in text
        assert all(secret not in text for secret in (*SECRETS, "pn-attacker-secret"))


def test_whitespace_around_header_values_is_tolerated() -> None:
    headers = {k: f" {v} " for k, v in headers_for().items()}
    assert verify(headers) == NOW


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=512),
    secret=st.text(min_size=1, max_size=40),
    ts_offset=st.integers(-TOLERANCE * 1000, TOLERANCE * 1000),
)
def test_sign_then_verify_round_trips(body: bytes, secret: str, ts_offset: int) -> None:
    ts = NOW + ts_offset
    assert verify(headers_for(body, secret, ts), body, secrets=("pn-other", secret)) == ts


@settings(max_examples=60, deadline=None)
@given(body=st.binary(min_size=1, max_size=256), data=st.data())
def test_any_single_byte_tamper_fails(body: bytes, data: st.DataObject) -> None:
    headers = headers_for(body)
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(body)
    tampered[index] ^= flip
    with pytest.raises(SignatureError) as err:
        verify(headers, bytes(tampered))
    assert err.value.reason == "invalid_signature"


@settings(max_examples=60, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(["PayNow-Signature", "paynow-timestamp", "X-Other", "PAYNOW-SIGNATURE"]),
        st.text(max_size=60),
    ),
    body=st.binary(max_size=64),
)
def test_arbitrary_headers_only_raise_signature_error(headers: dict[str, str], body: bytes) -> None:
    try:
        verify(headers, body)
    except SignatureError as err:
        reason = err.reason
    else:
        reason = "verified"
    assert reason in ("invalid_signature", "invalid_timestamp", "verified")


def test_send_signs_with_the_current_time_and_posts_raw_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "accepted"})

    event = build_event("ON_ORDER_COMPLETED", uid="user-1", product_id="411486491630370816")
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        status, text = send("http://webhook.test/api/paynow/webhook", event, SECRETS[1], client=client)
    assert (status, json.loads(text)) == (200, {"status": "accepted"})
    request = seen[0]
    ts = int(request.headers["paynow-timestamp"])
    assert verify_signature(request.headers, request.content, SECRETS, now_ms=ts, tolerance_s=1) == ts
    assert json.loads(request.content) == event


def test_run_cli_uses_the_configured_secret(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"error": "invalid_signature"})

    class Args:
        url = "http://webhook.test/hook"
        event_type = "ON_REFUND"
        uid = "user-2"
        product_id = "411486491630370816"
        order_id = "411486491630370999"
        quantity = 1

    settings_ = Settings(paynow_webhook_secrets=(SECRETS[2],))
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert run_cli(settings_, Args(), client=client) == 1
        assert run_cli(Settings(), Args(), client=client) == 2  # nothing to sign with
    request = seen[0]
    ts = int(request.headers["PayNow-Timestamp"])
    assert verify_signature(request.headers, request.content, (SECRETS[2],), now_ms=ts, tolerance_s=1) == ts
    assert json.loads(request.content)["body"]["order_id"] == "411486491630370999"
    assert "HTTP 401" in capsys.readouterr().out
