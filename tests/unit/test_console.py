"""The operator console over in-memory fakes: refusals, CSRF, confirmation, every page rendered,
search, timeline, wallet, DLQ grouping and actions, the settings, and the ids on event records."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google.cloud import firestore
from starlette.applications import Starlette
from starlette.routing import Mount

from paynow_service.adapters.firestore_events import EventRecords
from paynow_service.config import ConfigError, Settings
from paynow_service.domain import events as ev
from paynow_service.domain.errors import PermissionDeniedError, UnauthenticatedError
from paynow_service.domain.ledger import LedgerEntry, PromoLot, Wallet
from paynow_service.domain.ledger_reader import read_entry
from paynow_service.entrypoints.console import build_console
from paynow_service.entrypoints.http_app import _require_route_settings
from paynow_service.service.console_dlq import choose, group_by_reason
from paynow_service.service.console_queries import ConsoleQueries, order_id_of_entries

NOW = dt.datetime.now(dt.UTC)
OPERATOR = "ops@example.com"
EMULATORS = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"}
ORDER, CUSTOMER, UID = "9001", "7001", "u-1"
DONE, FAILED, WORKER_MADE = "5001", "5002", "5003"
ENTRY = f"paynow:order:{ORDER}:line:1"


@dataclass(frozen=True)
class Stored:
    event_id: str
    fields: dict[str, Any]
    event: ev.PaymentEvent | None = None


class FakeReads:
    def __init__(self) -> None:
        self.events: dict[str, Stored] = {
            DONE: Stored(
                DONE,
                {
                    "status": "processed",
                    "eventType": ev.ORDER_COMPLETED,
                    "orderId": ORDER,
                    "customerId": CUSTOMER,
                    "orderingKey": UID,
                    "receivedAt": NOW,
                    "publishedAt": NOW,
                    "processedAt": NOW,
                    "result": {
                        "outcome": "credited",
                        "uid": UID,
                        "points": 500,
                        "entryIds": [ENTRY],
                        "by": "w",
                    },
                },
            ),
            FAILED: Stored(
                FAILED,
                {
                    "status": "failed_terminal",
                    "eventType": ev.ORDER_COMPLETED,
                    "orderingKey": "u-2",
                    "receivedAt": NOW,
                    "failureReason": "unknown_product",
                    "failureDetail": "no plugin maps product 42",
                },
            ),
            # Started by the worker before the webhook's record: no orderId, no customerId.
            WORKER_MADE: Stored(
                WORKER_MADE,
                {"status": "processed", "result": {"uid": UID, "entryIds": [ENTRY]}, "orderingKey": UID},
            ),
        }
        self.orders = {
            ORDER: {
                "uid": UID,
                "eventId": DONE,
                "points": 500,
                "credits": [{"entryId": ENTRY, "points": 500}],
                "refunds": {"r1": "approved"},
                "chargebacks": {"c1": {"status": "won", "closed": True}},
                "parked": {"5009": {"type": ev.REFUND, "parkedAt": NOW}},
            }
        }
        self.report: dict[str, Any] | None = None

    async def event(self, event_id: str) -> Stored | None:
        return self.events.get(event_id)

    async def events_where(self, name: str, value: str, limit: int) -> list[Stored]:
        return [e for e in self.events.values() if e.fields.get(name) == value][:limit]

    async def order(self, order_id: str) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    async def customer_uid(self, customer_id: str) -> str:
        return UID if customer_id == CUSTOMER else ""

    async def user_exists(self, uid: str) -> bool:
        return uid == UID

    async def wallet(self, uid: str) -> Wallet | None:
        if uid != UID:
            return None
        lots = (
            PromoLot("lot-old", 5, NOW - dt.timedelta(days=1), "promo"),
            PromoLot("lot-new", 50, NOW + dt.timedelta(days=365), "paynow"),
        )
        return Wallet(paid=500, lots=lots, promo_stored=55, updated_at=NOW)

    async def entries(self, uid: str, entry_ids: Sequence[str]) -> list[LedgerEntry]:
        return [_entry(uid)] if ENTRY in entry_ids else []

    async def latest_report(self) -> dict[str, Any] | None:
        return self.report


def _entry(uid: str) -> LedgerEntry:
    data = {
        "type": "credit",
        "channel": "paid",
        "amount": 500,
        "delta": {"paid": 500, "promo": 0},
        "createdAt": NOW,
    }
    return read_entry(uid, ENTRY, data)


class FakeLedger:
    async def list_ledger(self, uid: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        app_spend = {"type": "debit", "channel": "promo", "amount": 15, "createdAt": NOW}
        return [_entry(uid), read_entry(uid, "app-spend", app_spend), read_entry(uid, "junk", {"x": 1})], ""


@dataclass
class Letter:
    event_id: str
    reason: str
    age_s: int = 60
    message_id: str = "m"
    event_type: str = ev.ORDER_COMPLETED
    ordering_key: str = "u-2"
    error_class: str = "terminal"
    attempts: str = ""
    forwarded_by_pubsub: bool = False
    decodes: bool = True
    detail: str = ""
    data: bytes = b"x"


@dataclass
class FakeDlq:
    letters: list[Letter]
    acked: list[str] = field(default_factory=list)
    closed: int = 0

    def read(self, limit: int) -> list[Letter]:
        return [d for d in self.letters if d.event_id not in self.acked][:limit]

    def ack(self, letters: Sequence[Letter]) -> None:
        self.acked += [d.event_id for d in letters]

    def replay_attributes(self, letter: Letter) -> dict[str, str]:
        return {"dlq_replay": "true"}

    def close(self) -> None:
        self.closed += 1


@dataclass
class FakeRecords:
    reset: list[str] = field(default_factory=list)

    async def reset_to_queued(self, event_id: str) -> None:
        self.reset.append(event_id)


@dataclass
class FakeTopic:
    events_topic: str = "events"
    published: list[bytes] = field(default_factory=list)

    async def publish(self, topic: str, data: bytes, attributes: Any, ordering_key: str = "") -> str:
        self.published.append(data)
        return "1"


class FakeVerifier:
    async def verify(self, authorization: str | None) -> str:
        if authorization == "Bearer good":
            return OPERATOR
        if authorization == "Bearer stranger":
            raise PermissionDeniedError("not listed")
        raise UnauthenticatedError("no token")


@dataclass
class Harness:
    client: httpx.AsyncClient
    reads: FakeReads
    dlq: FakeDlq
    records: FakeRecords
    topic: FakeTopic

    async def csrf(self) -> str:
        await self.client.get("/console/signin")
        return str(self.client.cookies.get("console_csrf"))


def harness(verifier: FakeVerifier | None = None) -> Harness:
    reads, dlq, records, topic = FakeReads(), FakeDlq([]), FakeRecords(), FakeTopic()
    dlq.letters = [
        Letter(FAILED, "unknown_product", 120),
        Letter("6001", "unknown_product", 30),
        Letter("6002", "user_not_found"),
    ]
    console = build_console(verifier, ConsoleQueries(reads, FakeLedger()), lambda: dlq, records, topic)
    app = Starlette(routes=[Mount("/console", app=console)])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")
    return Harness(client, reads, dlq, records, topic)


@pytest.fixture
def h() -> Harness:
    return harness(FakeVerifier())


def signed_in(h: Harness) -> httpx.AsyncClient:
    h.client.headers["Authorization"] = "Bearer good"
    return h.client


PAGES = ["/console/", f"/console/?q={ORDER}", f"/console/event?id={DONE}", "/console/dlq",
         f"/console/user?uid={UID}", "/console/report"]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_refuses_without_an_operator_token(h: Harness, path: str) -> None:
    for authorization, status in ((None, 401), ("Bearer forged", 401), ("Bearer stranger", 403)):
        headers = {"Authorization": authorization} if authorization else {}
        answer = await h.client.get(path, headers=headers)
        assert answer.status_code == status
        assert UID not in answer.text
        assert DONE not in answer.text
        assert ORDER not in answer.text
    assert (await h.client.get(path, headers={"Authorization": "Bearer good"})).status_code == 200
    assert (await h.client.get(path, headers={"Cookie": "console_token=good"})).status_code == 200


async def test_the_sign_in_form_keeps_the_token_in_an_http_only_cookie(h: Harness) -> None:
    csrf = await h.csrf()
    refused = await h.client.post("/console/signin", data={"token": "stranger", "csrf": csrf})
    assert refused.status_code == 403
    assert "not an operator" in refused.text
    assert (
        await h.client.post("/console/signin", data={"token": "good"})
    ).status_code == 403  # no CSRF token
    answer = await h.client.post(
        "/console/signin", data={"token": "good", "csrf": csrf}, follow_redirects=False
    )
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "console_token=good" in cookie
    assert "HttpOnly" in cookie
    assert "Secure" in cookie
    assert "samesite=strict" in cookie.lower()
    assert (await h.client.get("/console/")).status_code == 200


async def test_search_finds_an_event_by_its_id_order_customer_and_uid(h: Harness) -> None:
    client = signed_in(h)
    for query in (DONE, ORDER, CUSTOMER, UID):
        page = (await client.get("/console/", params={"q": query})).text
        assert f"event?id={DONE}" in page, query
        assert f"user?uid={UID}" in page, query
    assert "Nothing matches" in (await client.get("/console/", params={"q": "nobody"})).text
    assert "Nothing matches" in (await client.get("/console/", params={"q": "a/b"})).text  # not a document id


async def test_a_worker_made_record_is_found_through_its_order_and_entries() -> None:
    queries = ConsoleQueries(FakeReads(), FakeLedger())
    timeline = await queries.timeline(WORKER_MADE)
    assert timeline is not None
    assert timeline.summary.order_id == ORDER
    assert order_id_of_entries([ENTRY]) == ORDER
    assert order_id_of_entries(["api:x:y"]) == ""


async def test_the_timeline_shows_steps_entries_and_the_order(h: Harness) -> None:
    page = (await signed_in(h).get("/console/event", params={"id": DONE})).text
    assert 'data-step="processed"' in page
    assert "credited, 500 points" in page
    assert ENTRY in page
    assert "r1: approved" in page
    assert "c1: won (closed)" in page
    assert "5009" in page
    failed = (await h.client.get("/console/event", params={"id": FAILED})).text
    assert "unknown_product: no plugin maps product 42" in failed
    assert 'action="/console/dlq/replay"' in failed
    assert 'data-confirm="Replay event 5002 from the DLQ?"' in failed
    assert (await h.client.get("/console/event", params={"id": "missing"})).status_code == 404


async def test_the_wallet_page_shows_lots_with_expiries_and_every_shape(h: Harness) -> None:
    page = (await signed_in(h).get("/console/user", params={"uid": UID})).text
    assert "lot-new" in page
    assert (NOW + dt.timedelta(days=365)).strftime("%Y-%m-%d") in page
    assert 'id="promo-spendable">50<' in page
    assert 'id="promo-stored">55<' in page
    assert 'class="expired"' in page  # lot-old
    assert "shape-app_points" in page
    assert "shape-unknown" in page
    assert (await h.client.get("/console/user", params={"uid": "nobody"})).status_code == 200  # no wallet yet


async def test_the_report_page(h: Harness) -> None:
    client = signed_in(h)
    assert "No report yet" in (await client.get("/console/report")).text
    finding = {"kind": "paid_drift", "uid": "u-9", "detail": "off by 5", "fixed": False}
    h.reads.report = {"reportId": "r-1", "finishedAt": NOW, "findingsByKind": {"paid_drift": 2},
                      "findings": [finding], "markdown": "# <b>report</b>"}  # fmt: skip
    page = (await client.get("/console/report")).text
    assert "r-1" in page
    assert "off by 5" in page
    assert "# &lt;b&gt;report&lt;/b&gt;" in page


async def test_the_dlq_is_grouped_by_reason_and_released(h: Harness) -> None:
    page = (await signed_in(h).get("/console/dlq")).text
    assert page.index('data-reason="unknown_product"') < page.index('data-reason="user_not_found"')
    assert h.dlq.closed == 1
    assert h.dlq.acked == []
    groups = group_by_reason(h.dlq.letters)
    assert [(g.reason, g.count, g.oldest_age_s, g.newest_age_s) for g in groups] == [
        ("unknown_product", 2, 120, 30),
        ("user_not_found", 1, 60, 60),
    ]
    assert choose(h.dlq.letters, ["6001", "nope"], "")[1] == ["nope"]


async def test_a_replay_needs_csrf_and_confirmation_then_goes_through_the_replay_service(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    client = signed_in(h)
    assert (
        await client.post("/console/dlq/replay", data={"event_id": FAILED, "confirm": "yes"})
    ).status_code == 403
    csrf = await h.csrf()
    confirm = await client.post("/console/dlq/replay", data={"event_id": FAILED, "csrf": csrf})
    assert confirm.status_code == 200
    assert "Confirm: replay" in confirm.text
    assert h.dlq.acked == []
    assert h.topic.published == []
    with caplog.at_level(logging.INFO, logger="paynow_service.console"):
        done = await client.post(
            "/console/dlq/replay", data={"event_id": FAILED, "csrf": csrf, "confirm": "yes"}
        )
    assert done.status_code == 200
    assert "1</strong> replayed" in done.text
    assert (h.dlq.acked, h.records.reset, len(h.topic.published)) == ([FAILED], [FAILED], 1)
    (line,) = [r for r in caplog.records if r.getMessage() == "Console DLQ replay"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["operator"] == OPERATOR
    assert fields["event_ids"] == [FAILED]
    assert fields["done"] == 1


async def test_purge_of_a_reason_acknowledges_its_letters_only(h: Harness) -> None:
    client = signed_in(h)
    csrf = await h.csrf()
    done = await client.post(
        "/console/dlq/purge", data={"reason": "unknown_product", "csrf": csrf, "confirm": "yes"}
    )
    assert done.status_code == 200
    assert "2</strong> purged" in done.text
    assert sorted(h.dlq.acked) == sorted([FAILED, "6001"])
    assert h.topic.published == []


async def test_the_open_console_needs_no_token_and_says_so() -> None:
    h = harness(None)
    page = await h.client.get("/console/")
    assert page.status_code == 200
    assert 'id="open-banner"' in page.text
    assert "Content-Security-Policy" in page.headers
    assert page.headers["Cache-Control"] == "no-store"


def test_console_settings() -> None:
    routes = {"HTTP_ROUTES": "console"}
    on_gcp = Settings.from_env(routes)
    assert not on_gcp.console_open
    with pytest.raises(ConfigError, match=r"^CONSOLE_OPERATORS is required"):
        _require_route_settings(on_gcp)
    local = Settings.from_env({**routes, **EMULATORS})
    assert local.console_open
    assert local.listen_host == "127.0.0.1"
    assert local.disabled_auths == ("CONSOLE_OPERATORS",)
    listed = Settings.from_env({**routes, **EMULATORS, "CONSOLE_OPERATORS": "a@example.com, b@example.com"})
    assert not listed.console_open
    assert listed.console_operators == ("a@example.com", "b@example.com")
    _require_route_settings(
        Settings.from_env({"HTTP_ROUTES": "console", "CONSOLE_OPERATORS": "a@example.com"})
    )
    assert Settings.from_env({}).console_audience == "32555940559.apps.googleusercontent.com"
    with pytest.raises(ConfigError, match=r"^CONSOLE_CERTS_URL="):
        Settings.from_env({"CONSOLE_CERTS_URL": "http://127.0.0.1:9/certs"})


def test_event_records_carry_the_order_and_customer_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")  # a client that never connects
    records = EventRecords(firestore.AsyncClient(project="p"), ttl_days=30, timeout_s=1)
    order = ev.Order("o-1", ())
    completed = ev.PaymentEvent("e1", ev.ORDER_COMPLETED, uid="u", customer_id="c-1", order=order)
    refund = ev.PaymentEvent("e2", ev.REFUND, refund=ev.Refund("r-1", "o-2", "approved"))
    chargeback = ev.PaymentEvent("e3", ev.CHARGEBACK, chargeback=ev.Chargeback("cb-1", "o-3"))
    ignored = ev.PaymentEvent("e4", "ON_PAYMENT_COMPLETED")
    ids = [
        (r["orderId"], r["customerId"])
        for r in (records._new_record(e, "h") for e in (completed, refund, chargeback, ignored))
    ]
    assert ids == [("o-1", "c-1"), ("o-2", None), ("o-3", None), (None, None)]
