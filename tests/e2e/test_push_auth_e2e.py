"""The push endpoint with OIDC on (as in production) through the running HTTP app.

Tokens are signed by keys the test generates; the certs are served from a loopback
URL given as PUSH_CERTS_URL. Only Pub/Sub's own account gets in; forged envelopes
from it are dead-lettered and acknowledged, never refused (a 4xx would be a nack).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from paynow_loadtest.processes import ServiceProcess
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.event_codec import encode_event
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook
from paynow_service.sample_webhooks import build_event
from tests.support.processes import serve
from tests.support.stack import (
    PRODUCT,
    apply_topology,
    doc,
    pull,
    signed,
    stack_env,
    unique,
    write_catalog,
)
from tests.support.tokens import CertsServer, TokenIssuer, unsigned_token

AUDIENCE = "https://worker.example.test/api/tasks/paynow/process"
ACCOUNT = "pubsub-push@example-project.iam.gserviceaccount.com"


class PushTarget:
    def __init__(self, url: str, settings: Settings, issuer: TokenIssuer, http: ServiceProcess) -> None:
        self.url = url
        self.settings = settings
        self.issuer = issuer
        self.http = http

    def push(self, body: dict[str, Any] | bytes, authorization: str | None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return httpx.post(self.url, content=content, headers=headers, timeout=15)

    def good(self) -> str:
        return self.issuer.bearer(audience=AUDIENCE, email=ACCOUNT)


@pytest.fixture(scope="module")
def target(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushTarget]:
    tmp = tmp_path_factory.mktemp("push-auth")
    issuer = TokenIssuer()
    with CertsServer(issuer) as certs:
        env = stack_env(
            emulators.env(),
            write_catalog(tmp),
            HTTP_ROUTES="push",
            PUSH_AUTH="enabled",
            PUSH_AUDIENCE=AUDIENCE,
            PUSH_SERVICE_ACCOUNT=ACCOUNT,
            PUSH_CERTS_URL=certs.url,
        )
        settings = Settings.from_env(env)
        apply_topology(settings)
        http = serve(env, tmp)
        try:
            yield PushTarget(f"http://127.0.0.1:{http.port}/api/tasks/paynow/process", settings, issuer, http)
        finally:
            http.stop()


def envelope(uid: str, **attribute_overrides: str) -> tuple[dict[str, Any], str]:
    now = int(time.time() * 1000)
    event = parse_webhook(
        json.dumps(build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT)).encode(),
        received_at_ms=now,
        sent_at_ms=now,
    )
    data, attributes = encode_event(event)
    attributes = signed(data, attributes)  # as the webhook publishes it
    attributes.update(attribute_overrides)
    message = {
        "data": base64.b64encode(data).decode(),
        "attributes": attributes,
        "messageId": "m-1",
        "message_id": "m-1",
        "publishTime": "2026-01-01T00:00:00Z",
        "orderingKey": uid,
    }
    return {
        "message": message,
        "subscription": "projects/p/subscriptions/s",
        "deliveryAttempt": 1,
    }, event.event_id


def paid(target: PushTarget, uid: str) -> int | None:
    wallet = doc(target.settings.google_cloud_project, f"users/{uid}/wallet/points")
    return None if wallet is None else int(wallet["paidBalance"])


def test_valid_token_is_accepted_and_credits(target: PushTarget) -> None:
    uid = unique("u")
    body, _ = envelope(uid)
    response = target.push(body, target.good())
    assert response.status_code == 204, response.text
    assert paid(target, uid) == 500


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("missing", 401),
        ("not a jwt", 401),
        ("wrong audience", 401),
        ("expired", 401),
        ("alg none", 401),
        ("foreign key", 401),
        ("wrong issuer", 401),
        ("wrong email", 403),
        ("unverified email", 403),
    ],
)
def test_bad_tokens_are_refused_and_credit_nothing(target: PushTarget, case: str, status: int) -> None:
    issuer = target.issuer
    claims = issuer.claims(audience=AUDIENCE, email=ACCOUNT)
    authorization = {
        "missing": None,
        "not a jwt": "Bearer not-a-token",
        "wrong audience": issuer.bearer(audience="https://elsewhere.example.test", email=ACCOUNT),
        "expired": issuer.bearer(
            audience=AUDIENCE, email=ACCOUNT, issued_at=int(time.time()) - 7200, expires_in=3600
        ),
        "alg none": f"Bearer {unsigned_token(claims, kid=issuer.kid)}",
        "foreign key": TokenIssuer(kid=issuer.kid).bearer(audience=AUDIENCE, email=ACCOUNT),
        "wrong issuer": issuer.bearer(audience=AUDIENCE, email=ACCOUNT, issuer="https://evil.example.test"),
        "wrong email": issuer.bearer(
            audience=AUDIENCE, email="someone@example-project.iam.gserviceaccount.com"
        ),
        "unverified email": issuer.bearer(audience=AUDIENCE, email=ACCOUNT, email_verified=False),
    }[case]
    uid = unique("u")
    body, _ = envelope(uid)
    response = target.push(body, authorization)
    assert response.status_code == status, (case, response.text)
    assert paid(target, uid) is None
    token = (authorization or "").removeprefix("Bearer ")
    if token:
        assert token not in target.http.logs()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not json", "malformed_message"),
        ("no message", "malformed_message"),
        ("bad base64", "malformed_message"),
        ("wrong proto", "unverified_event"),
        ("future schema", "incompatible_schema"),
        ("unsigned", "unverified_event"),
        ("legacy json", "legacy_message"),
    ],
)
def test_forged_envelopes_from_pubsub_are_dead_lettered_and_acked(
    target: PushTarget, case: str, reason: str
) -> None:
    uid = unique("u")
    body, event_id = envelope(uid)
    forged: dict[str, Any] | bytes
    if case == "not json":
        forged = b"{{{ definitely not json"
    elif case == "no message":
        forged = {"subscription": "s", "marker": uid}
    elif case == "bad base64":
        body["message"]["data"] = "!!!not base64!!!"
        forged = body
    elif case == "wrong proto":
        body["message"]["data"] = base64.b64encode(
            b"\x08\x96\x01garbage-that-is-not-a-payment-event"
        ).decode()
        forged = body
    elif case == "unsigned":
        del body["message"]["attributes"]["event_mac"]
        forged = body
    elif case == "legacy json":
        legacy = {"version": 2, "minCompatible": 1, "eventId": event_id, "eventType": "order", "data": {}}
        body["message"]["data"] = base64.b64encode(json.dumps(legacy).encode()).decode()
        forged = body
    else:
        body["message"]["attributes"]["schema_version"] = "99"
        forged = body
    response = target.push(forged, target.good())
    assert response.status_code == 204, (case, response.text)
    letters = pull(target.settings, target.settings.pubsub_dlq_subscription, want=1)
    assert [m.attributes["reason"] for m in letters] == [reason], case
    assert paid(target, uid) is None
    # Refused before anything proved which event it is: the event id it claims is not marked
    # (a forged message could otherwise fail a real event).
    assert doc(target.settings.google_cloud_project, f"webhookEvents/{event_id}") is None
