"""The operator console in a real browser: search and timeline, a dead letter replayed from the page,
a wallet with its promo lot, the reconciliation report, and refusals without an operator's token.

Each test writes the screenshots of docs/console.md (docs/console/*.png)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import firestore

from paynow_loadtest.webhook import post
from paynow_service.sample_webhooks import build_event
from tests.browser.conftest import OPERATOR, ConsoleStack, new_page, shot
from tests.e2e.test_safe_defaults import LOOPBACK, listen_address
from tests.support.ledger_shapes import reference_entries
from tests.support.processes import run_cli, serve
from tests.support.stack import CATALOG, PRODUCT, PROMO_PRODUCT, doc, ledger, unique, wait_for
from tests.support.tokens import TokenIssuer

pytestmark = [pytest.mark.e2e, pytest.mark.emulators]

SECRET = "pn-test-secret-one"
NEW_PRODUCT = "411486491630379999"


def send(console: ConsoleStack, event: dict[str, Any]) -> None:
    response = post(console.webhook, json.dumps(event).encode(), SECRET, timeout=10)
    assert response.status_code == 200, response.text


def status_of(console: ConsoleStack, event_id: str) -> str:
    return str((doc(console.project, f"webhookEvents/{event_id}") or {}).get("status", ""))


def test_search_finds_a_webhook_event_and_its_timeline_shows_it_processed(
    console: ConsoleStack, page: Any
) -> None:
    uid = unique("u")
    event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, quantity=2)
    send(console, event)
    event_id, order_id = event["event_id"], event["body"]["id"]
    customer_id = event["body"]["customer"]["id"]
    assert wait_for(lambda: status_of(console, event_id) == "processed", timeout=30)
    # The webhook marks `publishedAt` in batches (within 0.2 s): the worker may have processed the
    # event first. The timeline below shows the record once both are written.
    record = f"webhookEvents/{event_id}"
    assert wait_for(lambda: (doc(console.project, record) or {}).get("publishedAt") is not None, timeout=10)

    page.fill("#q", order_id)
    with page.expect_navigation():
        page.click("form.search button")
    row = page.locator("table.events tr", has_text=event_id)
    assert row.count() == 1, page.content()[:1500] + console.http.logs()[-2500:]
    assert "processed" in row.inner_text()
    assert page.locator("ul.users", has_text=uid).count() == 1
    shot(page, "search")
    for other in (customer_id, uid, event_id):  # the same event by its customer, its user and its id
        page.goto(f"{console.base}/?q={other}")
        assert page.locator("table.events tr", has_text=event_id).count() == 1, other

    with page.expect_navigation():
        page.locator("table.events a", has_text=event_id).first.click()
    assert page.inner_text("#event-status") == "processed"
    steps = {
        li.get_attribute("data-step"): li.get_attribute("class") for li in page.locator("#timeline li").all()
    }
    assert steps["processed"] == "step done"
    assert steps["published"] == "step done"
    line_id = event["body"]["lines"][0]["id"]
    entries = page.locator("table.entries")
    assert f"paynow:order:{order_id}:line:{line_id}" in entries.inner_text()
    assert "1000" in entries.inner_text()  # 2 x 500 points
    shot(page, "event")


def test_a_dead_letter_for_an_unknown_product_is_replayed_from_the_page_and_credited_once(
    console: ConsoleStack, page: Any
) -> None:
    uid = unique("u")
    event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=NEW_PRODUCT, quantity=2)
    send(console, event)
    event_id = event["event_id"]
    assert wait_for(lambda: status_of(console, event_id) == "failed_terminal", timeout=30)

    page.goto(f"{console.base}/event?id={event_id}")
    assert page.inner_text("#event-status") == "failed_terminal"
    assert "unknown_product" in page.inner_text("li[data-step=dead-lettered]")
    shot(page, "event-dead-lettered")

    # The fix: the product enters the catalog, and the worker restarts with it.
    console.catalog.write_text(CATALOG + f'\n[products."{NEW_PRODUCT}"]\npoints = 300\n')
    console.restart_worker()

    page.goto(f"{console.base}/dlq")
    group = page.locator("#dlq-groups tr[data-reason=unknown_product]")
    assert int(group.locator(".count").inner_text()) >= 1
    letter = page.locator(f"tr[data-event-id='{event_id}']")
    assert letter.count() == 1
    shot(page, "dlq")

    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    with page.expect_navigation():
        letter.locator("form[action$='/dlq/replay'] button").click()
    assert asked == [f"Replay event {event_id}?"]
    assert page.inner_text("#outcome").startswith("1 replayed, 0 failed")
    shot(page, "replayed")

    wallet = f"users/{uid}/wallet/points"
    assert wait_for(lambda: (doc(console.project, wallet) or {}).get("paidBalance") == 600, timeout=30)
    time.sleep(2)  # nothing more arrives
    assert (doc(console.project, wallet) or {}).get("paidBalance") == 600
    assert len(ledger(console.project, uid)) == 1
    assert status_of(console, event_id) == "processed"
    page.goto(f"{console.base}/dlq")
    assert page.locator(f"tr[data-event-id='{event_id}']").count() == 0


def test_the_wallet_page_shows_a_promo_lot_its_expiry_and_every_ledger_shape(
    console: ConsoleStack, page: Any
) -> None:
    uid = unique("u")
    event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PROMO_PRODUCT)
    send(console, event)
    wallet_path = f"users/{uid}/wallet/points"
    assert wait_for(lambda: (doc(console.project, wallet_path) or {}).get("promoBalance") == 50, timeout=30)
    (lot,) = (doc(console.project, wallet_path) or {})["promoLots"]
    # The app's own writers share the ledger: their entries are listed too.
    client = firestore.Client(project=console.project)
    try:
        for entry_id, data in reference_entries(dt.datetime.now(dt.UTC)).items():
            client.document(f"users/{uid}/ledger/{entry_id}").set(data)
    finally:
        client.close()

    page.goto(f"{console.base}/user?uid={uid}")
    lots = page.locator("#lots")
    assert lot["id"] in lots.inner_text()
    expiry = lot["expiresAt"].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert expiry in lots.inner_text()
    assert page.inner_text("#promo-spendable") == "50"
    assert page.inner_text("#promo-stored") == "50"
    shapes = {row.get_attribute("class") for row in page.locator("table.entries tr.entry").all()}
    assert {"entry shape-service", "entry shape-app_points", "entry shape-app_wallet_ledger"} <= shapes
    assert "entry shape-unknown" in shapes
    shot(page, "wallet")


def test_the_report_page_shows_the_latest_reconciliation_report(console: ConsoleStack, page: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    older, latest = unique("rep-old"), unique("rep")
    client = firestore.Client(project=console.project)
    try:
        client.document(f"reconcileReports/{older}").set(
            {"reportId": older, "finishedAt": now - dt.timedelta(days=1)}
        )
        client.document(f"reconcileReports/{latest}").set(
            {
                "reportId": latest,
                "startedAt": now - dt.timedelta(minutes=3),
                "finishedAt": now + dt.timedelta(days=3650),  # stays the latest of this test session
                "usersScanned": 120,
                "eventsScanned": 480,
                "ordersScanned": 300,
                "findingsByKind": {"paid_drift": 1, "event_without_entries": 1},
                "findings": [
                    {
                        "kind": "paid_drift",
                        "uid": "u-drift",
                        "detail": "wallet 500, ledger 450",
                        "fixed": True,
                    },
                    {"kind": "event_without_entries", "eventId": "915000000000000001", "detail": "1 of 1"},
                ],
                "fixedCount": 1,
                "driftCount": 1,
                "markdown": "# Reconciliation\n\n- 2 findings",
            }
        )
    finally:
        client.close()
    page.goto(f"{console.base}/report")
    assert page.inner_text("#report-id") == latest
    text = page.inner_text("main")
    assert "paid_drift" in text
    assert "wallet 500, ledger 450" in text
    assert "# Reconciliation" in text
    shot(page, "report")


def test_requests_without_a_valid_operator_token_are_refused(console: ConsoleStack, browser: Any) -> None:
    uid = unique("u")
    event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT)
    send(console, event)
    assert wait_for(lambda: status_of(console, event["event_id"]) == "processed", timeout=30)
    url = f"{console.base}/?q={uid}"
    stranger = TokenIssuer()  # a key the certs URL does not serve
    cases = {
        "no token": (None, 401),
        "not a token": ("Bearer nonsense", 401),
        "foreign signature": (
            f"Bearer {stranger.token(audience='paynow-console-test', email=OPERATOR)}",
            401,
        ),
        "another audience": (f"Bearer {console.issuer.token(audience='elsewhere', email=OPERATOR)}", 401),
        "expired": (f"Bearer {console.token(issued_at=int(time.time()) - 7200)}", 401),
        "not an operator": (f"Bearer {console.token('someone@example.com')}", 403),
        "email not verified": (f"Bearer {console.token(email_verified=False)}", 403),
    }
    for name, (authorization, status) in cases.items():
        headers = {"Authorization": authorization} if authorization else {}
        for method, path in (
            ("GET", url),
            ("GET", f"{console.base}/user?uid={uid}"),
            ("GET", f"{console.base}/dlq"),
        ):
            answer = httpx.request(method, path, headers=headers, timeout=10)
            assert answer.status_code == status, (name, path)
            assert uid not in answer.text, name
            assert event["event_id"] not in answer.text, name
        purge = httpx.post(
            f"{console.base}/dlq/purge", data={"reason": "unknown_product"}, headers=headers, timeout=10
        )
        assert purge.status_code == status, name
        cookie = {"Cookie": f"console_token={authorization.split(' ', 1)[1]}"} if authorization else {}
        by_cookie = httpx.get(url, headers=cookie, timeout=10)
        assert by_cookie.status_code == status, name
    good = {"Authorization": f"Bearer {console.token()}"}
    assert uid in httpx.get(url, headers=good, timeout=10).text
    # A valid operator still needs the form's CSRF token to act.
    forged = httpx.post(
        f"{console.base}/dlq/purge",
        data={"reason": "unknown_product", "confirm": "yes"},
        headers=good,
        timeout=10,
    )
    assert forged.status_code == 403

    page = new_page(browser)
    try:
        page.goto(f"{console.base}/?q={uid}")
        assert page.inner_text("#refused").startswith("Sign in")
        assert uid not in page.content()
        shot(page, "refused")
        page.goto(f"{console.base}/signin")
        page.fill("#token", console.token("someone@example.com"))
        with page.expect_navigation():
            page.click("#signin")
        assert "not an operator" in page.inner_text("#signin-error")
        shot(page, "signin")
    finally:
        page.context.close()


def test_the_console_is_open_only_on_the_local_emulators_and_says_so(
    console: ConsoleStack, browser: Any, tmp_path: Path
) -> None:
    env = {**console.env, "HTTP_ROUTES": "console", "CONSOLE_OPERATORS": ""}
    http = serve(env, tmp_path)
    try:
        assert listen_address(http.port) in LOOPBACK
        page = new_page(browser)
        try:
            page.goto(f"http://127.0.0.1:{http.port}/console/")
            assert "Open console" in page.inner_text("#open-banner")
            shot(page, "open")
        finally:
            page.context.close()
    finally:
        http.stop()
    # Anywhere else (here: not on the emulators) a console without operators does not start.
    on_gcp = {"PUBSUB_EMULATOR_HOST": "", "FIRESTORE_EMULATOR_HOST": "", "PUSH_AUTH": "enabled"}
    on_gcp |= {"POINTS_AUTH": "enabled", "CONSOLE_CERTS_URL": "https://www.googleapis.com/oauth2/v1/certs"}
    refused = run_cli("serve", env={**env, **on_gcp})
    assert refused.returncode != 0
    assert "CONSOLE_OPERATORS is required" in refused.stdout + refused.stderr
