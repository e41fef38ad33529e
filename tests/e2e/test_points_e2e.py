"""PointsService end to end: the real gRPC server process and the Connect app over HTTP, same answers.

The gRPC server runs as its own process (`grpc_server.run`, as `paynow-service grpc`
does) on a loopback port; the Connect app is mounted in a small Starlette app served
by uvicorn in the test's loop. Both verify ID tokens signed by a generated key whose
certs a loopback server publishes, and share the Firestore emulator.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from google.cloud.firestore import AsyncClient
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.routing import Mount

from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.config import Settings
from paynow_service.entrypoints.connect_points import build_points_asgi
from paynow_service.gen.paynow.points.v1 import points_service_pb2 as pb
from paynow_service.gen.paynow.points.v1 import points_service_pb2_grpc as pb_grpc
from paynow_service.service.points import PointsCore
from tests.conftest import PROJECT
from tests.support.ledger_shapes import reference_entries
from tests.support.stack import unique
from tests.support.tokens import CertsServer, TokenIssuer

pytestmark = pytest.mark.e2e

AUDIENCE = "https://points.e2e.test"
CALLER = "billing@project.iam.gserviceaccount.com"
SERVICE = "/paynow.points.v1.PointsService"
RUN_GRPC = (
    "import sys\n"
    "from paynow_service.config import Settings\n"
    "from paynow_service.entrypoints.grpc_server import run\n"
    "sys.exit(run(Settings.from_env(), host='127.0.0.1', drain_s=2.0))\n"
)


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture(scope="module")
def certs(issuer: TokenIssuer) -> Iterator[CertsServer]:
    with CertsServer(issuer) as server:
        yield server


@pytest.fixture(scope="module")
def env(emulators: EmulatorStack, certs: CertsServer) -> dict[str, str]:
    return {
        **emulators.env(),
        "GRPC_PORT": str(free_port()),
        "POINTS_AUTH": "enabled",
        "POINTS_AUDIENCE": AUDIENCE,
        "POINTS_ALLOWED_CALLERS": f"{CALLER},unverified@example.com",
        "POINTS_CERTS_URL": certs.url,
    }


def start_grpc(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_GRPC],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


async def wait_serving(channel: grpc.aio.Channel, process: subprocess.Popen[bytes]) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gRPC server exited during start-up"
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the gRPC server never reported SERVING")


@pytest.fixture(scope="module")
async def grpc_channel(env: dict[str, str]) -> AsyncIterator[grpc.aio.Channel]:
    process = start_grpc(env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{env['GRPC_PORT']}")
    try:
        await wait_serving(channel, process)
        yield channel
    finally:
        await channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(20)


@pytest.fixture(scope="module")
async def connect_url(env: dict[str, str]) -> AsyncIterator[str]:
    settings = Settings.from_env(env)
    path, app = build_points_asgi(settings, PointsCore(FirestoreLedger(AsyncClient(project=PROJECT))))
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Mount(path, app=app)]), host="127.0.0.1", port=port, log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
def stub(grpc_channel: grpc.aio.Channel) -> pb_grpc.PointsServiceStub:
    return pb_grpc.PointsServiceStub(grpc_channel)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


@pytest.fixture
def bearer(issuer: TokenIssuer) -> str:
    return issuer.bearer(audience=AUDIENCE, email=CALLER)


async def connect_json(
    http: httpx.AsyncClient, base: str, method: str, body: dict[str, Any], authorization: str | None
) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        **({"Authorization": authorization} if authorization else {}),
    }
    return await http.post(f"{base}{SERVICE}/{method}", json=body, headers=headers)


def as_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


async def test_both_transports_give_the_same_answers(
    stub: pb_grpc.PointsServiceStub, http: httpx.AsyncClient, connect_url: str, bearer: str
) -> None:
    uid, key = unique("u"), unique("key")
    auth = (("authorization", bearer),)
    credit = pb.CreditPointsRequest(
        uid=uid, amount=150, idempotency_key=key, source="shop", kind=pb.KIND_PAID, metadata={"order": "o-1"}
    )
    by_grpc = await stub.CreditPoints(credit, metadata=auth)
    assert not by_grpc.replayed
    assert by_grpc.entry.entry_id == f"api:{CALLER}:{key}"
    assert by_grpc.balance.paid_balance == 150
    # The same credit over Connect JSON is a replay of the gRPC one, field for field.
    replay = await connect_json(http, connect_url, "CreditPoints", json_format.MessageToDict(credit), bearer)
    assert replay.status_code == 200, replay.text
    body = replay.json()
    assert body["replayed"] is True
    assert body["entry"] == as_json(by_grpc.entry)
    assert body["entry"]["amount"] == "150"  # proto3 JSON: int64 as a string
    assert body["entry"]["kind"] == "KIND_PAID"
    assert body["balance"]["paidBalance"] == "150"
    # Balances and ledgers agree.
    balance = await stub.GetBalance(pb.GetBalanceRequest(uid=uid), metadata=auth)
    over_http = await connect_json(http, connect_url, "GetBalance", {"uid": uid}, bearer)
    assert over_http.json() == as_json(balance)
    ledger = await stub.ListLedger(pb.ListLedgerRequest(uid=uid), metadata=auth)
    over_http = await connect_json(http, connect_url, "ListLedger", {"uid": uid}, bearer)
    assert over_http.json() == as_json(ledger)
    assert [e.entry_id for e in ledger.entries] == [by_grpc.entry.entry_id]


async def test_reverse_over_connect_replayed_over_grpc(
    stub: pb_grpc.PointsServiceStub, http: httpx.AsyncClient, connect_url: str, bearer: str
) -> None:
    uid = unique("u")
    auth = (("authorization", bearer),)
    credited = await stub.CreditPoints(
        pb.CreditPointsRequest(
            uid=uid,
            amount=40,
            idempotency_key=unique("k"),
            kind=pb.KIND_PROMO,
            expires_at=Timestamp(seconds=int(time.time()) + 86400),
        ),
        metadata=auth,
    )
    body = {
        "uid": uid,
        "originalEntryId": credited.entry.entry_id,
        "idempotencyKey": "rev-1",
        "reason": "refund",
    }
    first = await connect_json(http, connect_url, "ReversePoints", body, bearer)
    assert first.status_code == 200, first.text
    assert first.json()["entry"]["amount"] == "-40"
    assert first.json()["entry"]["action"] == "ACTION_REVERSAL"
    again = await stub.ReversePoints(
        pb.ReversePointsRequest(uid=uid, original_entry_id=credited.entry.entry_id, idempotency_key="rev-1"),
        metadata=auth,
    )
    assert again.replayed
    assert as_json(again.entry) == first.json()["entry"]
    assert again.balance.promo_balance == 0


async def test_list_ledger_lists_every_shape_of_the_shared_ledger(
    stub: pb_grpc.PointsServiceStub, http: httpx.AsyncClient, connect_url: str, bearer: str
) -> None:
    """The app and its other writers share the ledger: every shape (and garbage) is listed, none fails."""
    uid = unique("u")
    auth = (("authorization", bearer),)
    shapes = reference_entries(datetime.now(UTC))
    db = AsyncClient(project=PROJECT)
    for entry_id, data in shapes.items():
        await db.document("users", uid, "ledger", entry_id).set(data)
    ours = await stub.CreditPoints(
        pb.CreditPointsRequest(uid=uid, amount=5, idempotency_key=unique("k"), kind=pb.KIND_PAID),
        metadata=auth,
    )
    listed_grpc: list[pb.LedgerEntry] = []
    listed_connect: list[dict[str, Any]] = []
    token = ""
    for _ in range(10):
        page = await stub.ListLedger(
            pb.ListLedgerRequest(uid=uid, page_size=4, page_token=token), metadata=auth
        )
        body = {"uid": uid, "pageSize": 4, **({"pageToken": token} if token else {})}
        over_http = await connect_json(http, connect_url, "ListLedger", body, bearer)
        assert over_http.status_code == 200, over_http.text
        assert over_http.json() == as_json(page)
        listed_grpc += page.entries
        listed_connect += over_http.json().get("entries", [])
        token = page.next_page_token
        if not token:
            break
    ids = [entry.entry_id for entry in listed_grpc]
    assert sorted(ids) == sorted([*shapes, ours.entry.entry_id])
    assert len(listed_connect) == len(ids)
    # Newest first: ours, then the shapes with a createdAt timestamp from the newest down; the rest last.
    dated = [i for i in shapes if isinstance(shapes[i].get("createdAt"), datetime)]
    assert ids[: len(dated) + 1] == [ours.entry.entry_id, *reversed(dated)]
    by_id = {entry.entry_id: entry for entry in listed_grpc}
    assert (by_id["app-spend-1"].amount, by_id["app-spend-1"].action) == (-15, pb.ACTION_DEBIT)
    assert by_id["app-spend-1"].pre_balance.promo == 40
    assert (by_id["wl-purchase"].status, by_id["wl-purchase"].shape) == ("posted", "app_wallet_ledger")
    assert by_id["garbage-typed"].action == pb.ACTION_OTHER
    assert by_id["garbage-typed"].unread_fields["amount"] == "lots"
    assert by_id["garbage-typed"].unread_fields["weird"] == '{"nested": [1, {"x": null}]}'


async def test_promo_credits_need_an_expiry_and_show_as_lots(
    stub: pb_grpc.PointsServiceStub, http: httpx.AsyncClient, connect_url: str, bearer: str
) -> None:
    uid = unique("u")
    auth = (("authorization", bearer),)
    without = {"uid": uid, "amount": "30", "idempotencyKey": "p1", "kind": "KIND_PROMO"}
    refused = await connect_json(http, connect_url, "CreditPoints", without, bearer)
    assert refused.status_code == 400
    assert "expires_at" in refused.json()["message"]
    expiry = "2031-01-02T03:04:05Z"
    credited = await connect_json(http, connect_url, "CreditPoints", {**without, "expiresAt": expiry}, bearer)
    assert credited.status_code == 200, credited.text
    entry = credited.json()["entry"]
    assert entry["creditLot"] == {"lotId": entry["entryId"], "amount": "30", "expiresAt": expiry}
    assert entry["delta"] == {"promo": "30"}
    other_expiry = {**without, "expiresAt": "2032-01-01T00:00:00Z"}
    conflict = await connect_json(http, connect_url, "CreditPoints", other_expiry, bearer)
    assert conflict.status_code == 409  # the expiry is part of the request
    balance = await stub.GetBalance(pb.GetBalanceRequest(uid=uid), metadata=auth)
    assert (balance.promo_balance, balance.promo_stored) == (30, 30)
    assert [(lot.id, lot.amount_remaining, lot.expired) for lot in balance.promo_lots] == [
        (entry["entryId"], 30, False)
    ]


async def test_curl_style_get_balance(http: httpx.AsyncClient, connect_url: str, bearer: str) -> None:
    response = await http.post(
        f"{connect_url}{SERVICE}/GetBalance",
        content=b'{"uid":"u1"}',
        headers={"Content-Type": "application/json", "Authorization": bearer},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {}  # zero balances and no wallet: proto3 JSON omits defaults


@pytest.mark.parametrize(
    ("case", "grpc_code", "http_status"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, 400),
        ("conflict", grpc.StatusCode.ALREADY_EXISTS, 409),
        ("not_found", grpc.StatusCode.NOT_FOUND, 404),
    ],
)
async def test_domain_errors_map_to_the_same_codes(
    stub: pb_grpc.PointsServiceStub,
    http: httpx.AsyncClient,
    connect_url: str,
    bearer: str,
    case: str,
    grpc_code: grpc.StatusCode,
    http_status: int,
) -> None:
    uid, key = unique("u"), unique("k")
    auth = (("authorization", bearer),)
    if case == "conflict":
        await stub.CreditPoints(
            pb.CreditPointsRequest(uid=uid, amount=1, idempotency_key=key, kind=1), metadata=auth
        )
    method, request = {
        "invalid": ("CreditPoints", pb.CreditPointsRequest(uid=uid, amount=0, idempotency_key=key, kind=1)),
        "conflict": ("CreditPoints", pb.CreditPointsRequest(uid=uid, amount=2, idempotency_key=key, kind=1)),
        "not_found": (
            "ReversePoints",
            pb.ReversePointsRequest(uid=uid, original_entry_id="nope", idempotency_key=key),
        ),
    }[case]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, method)(request, metadata=auth)
    assert raised.value.code() == grpc_code
    response = await connect_json(http, connect_url, method, json_format.MessageToDict(request), bearer)
    assert response.status_code == http_status
    assert response.json()["code"] == grpc_code.name.lower()


def bad_callers(issuer: TokenIssuer) -> list[tuple[str, str | None, grpc.StatusCode, int]]:
    foreign = TokenIssuer()
    return [
        ("no-token", None, grpc.StatusCode.UNAUTHENTICATED, 401),
        ("garbage", "Bearer nonsense", grpc.StatusCode.UNAUTHENTICATED, 401),
        (
            "wrong-audience",
            issuer.bearer(audience="https://other", email=CALLER),
            grpc.StatusCode.UNAUTHENTICATED,
            401,
        ),
        (
            "foreign-key",
            foreign.bearer(audience=AUDIENCE, email=CALLER),
            grpc.StatusCode.UNAUTHENTICATED,
            401,
        ),
        (
            "expired",
            issuer.bearer(audience=AUDIENCE, email=CALLER, expires_in=-60),
            grpc.StatusCode.UNAUTHENTICATED,
            401,
        ),
        (
            "not-allowed",
            issuer.bearer(audience=AUDIENCE, email="x@example.com"),
            grpc.StatusCode.PERMISSION_DENIED,
            403,
        ),
        (
            "unverified",
            issuer.bearer(audience=AUDIENCE, email="unverified@example.com", email_verified=False),
            grpc.StatusCode.PERMISSION_DENIED,
            403,
        ),
    ]


async def test_bad_callers_are_refused_over_both_transports(
    stub: pb_grpc.PointsServiceStub, http: httpx.AsyncClient, connect_url: str, issuer: TokenIssuer
) -> None:
    uid = unique("u")
    request = pb.CreditPointsRequest(uid=uid, amount=5, idempotency_key="k", kind=pb.KIND_PAID)
    for name, authorization, grpc_code, http_status in bad_callers(issuer):
        metadata = (("authorization", authorization),) if authorization else None
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreditPoints(request, metadata=metadata)
        assert raised.value.code() == grpc_code, name
        response = await connect_json(
            http, connect_url, "CreditPoints", json_format.MessageToDict(request), authorization
        )
        assert response.status_code == http_status, name
        assert response.json()["code"] == grpc_code.name.lower(), name
    balance = await connect_json(
        http, connect_url, "GetBalance", {"uid": uid}, issuer.bearer(audience=AUDIENCE, email=CALLER)
    )
    assert balance.json() == {}


async def test_health_reflection_and_graceful_stop(env: dict[str, str]) -> None:
    own = {**env, "GRPC_PORT": str(free_port())}
    process = start_grpc(own)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{own['GRPC_PORT']}")
    try:
        await wait_serving(channel, process)
        health = health_pb2_grpc.HealthStub(channel)
        named = await health.Check(health_pb2.HealthCheckRequest(service="paynow.points.v1.PointsService"))
        assert named.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = [s.name async for r in replies for s in r.list_services_response.service]
        assert "paynow.points.v1.PointsService" in services
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # inside the 2 s drain window
        draining = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert draining.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await asyncio.to_thread(process.wait, 20) == 0
    finally:
        await channel.close()
        if process.poll() is None:
            process.kill()
            process.wait(5)
