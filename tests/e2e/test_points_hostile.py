"""Hostile input against the running PointsService: gRPC, Connect JSON and Connect binary.

`paynow-service grpc` and `paynow-service serve` (HTTP_ROUTES=points) run as real
processes with POINTS_AUTH=disabled on the Firestore emulator. Two users are seeded
(`victim`: a paid and a promo credit; `other`: a credit and a reversed credit); every
test here sends requests that must be refused, or that touch only fresh users, and an
autouse fixture checks from Firestore that neither seeded wallet nor ledger moved, that
both processes are still alive and that GetBalance still answers over both transports.

Properties: never INTERNAL / UNKNOWN / HTTP 5xx; the documented codes (INVALID_ARGUMENT,
NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED); a refused write writes nothing; an
accepted one is in Firestore as answered.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
from google.cloud import firestore
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from paynow_loadtest.processes import ServiceProcess
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.gen.paynow.points.v1 import points_service_pb2 as pb
from paynow_service.gen.paynow.points.v1 import points_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

SERVICE = "paynow.points.v1.PointsService"
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1
MAX_AMOUNT = 10**12  # PointsCore's ceiling for one credit
CALLER = "local"  # the caller with POINTS_AUTH=disabled
TRANSPORTS = ("grpc", "connect-json", "connect-proto")
RESPONSES: dict[str, type[Message]] = {
    "CreditPoints": pb.CreditPointsResponse,
    "ReversePoints": pb.ReversePointsResponse,
    "GetBalance": pb.GetBalanceResponse,
    "ListLedger": pb.ListLedgerResponse,
}
REQUESTS: dict[str, type[Message]] = {
    "CreditPoints": pb.CreditPointsRequest,
    "ReversePoints": pb.ReversePointsRequest,
    "GetBalance": pb.GetBalanceRequest,
    "ListLedger": pb.ListLedgerRequest,
}
# Connect's HTTP status for each code this service may answer (connectrpc.com/docs/protocol).
CONNECT_HTTP = {
    "invalid_argument": 400,
    "failed_precondition": 400,
    "not_found": 404,
    "already_exists": 409,
    "aborted": 409,
    "resource_exhausted": 429,
    "unavailable": 503,
}
REFUSALS = {"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
HYPOTHESIS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Points:
    """The two running servers, clients for both, Firestore, and the seeded users."""

    stub: pb_grpc.PointsServiceStub
    channel: grpc.Channel
    http: httpx.Client
    base: str
    db: firestore.Client
    processes: tuple[ServiceProcess, ...]
    victim: str
    other: str
    victim_entry: str  # a paid credit of victim
    other_entry: str  # a credit of other, not reversed
    other_reversed: str  # a credit of other that other reversed

    # ---- calls; each returns (canonical code name, response or None) ----

    def grpc(self, method: str, request: Message) -> tuple[str, Any]:
        try:
            return "OK", getattr(self.stub, method)(request, timeout=20)
        except grpc.RpcError as err:
            return err.code().name, None

    def grpc_raw(self, method: str, data: bytes) -> str:
        call = self.channel.unary_unary(f"/{SERVICE}/{method}")
        try:
            call(data, timeout=20)
            return "OK"
        except grpc.RpcError as err:
            return str(err.code().name)

    def connect_raw(self, method: str, body: bytes, content_type: str | None) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return self.http.post(f"{self.base}/{SERVICE}/{method}", content=body, headers=headers)

    def connect(self, method: str, body: bytes, content_type: str) -> tuple[str, Any]:
        response = self.connect_raw(method, body, content_type)
        assert response.status_code < 500, (method, response.status_code, response.text[:300])
        if response.status_code == 200:
            if content_type == "application/proto":
                return "OK", RESPONSES[method].FromString(response.content)
            return "OK", json_format.Parse(response.text, RESPONSES[method]())
        code = str(response.json()["code"])
        assert response.status_code == CONNECT_HTTP.get(code), (code, response.status_code)
        return code.upper(), None

    def call(self, transport: str, method: str, request: Message) -> tuple[str, Any]:
        if transport == "grpc":
            return self.grpc(method, request)
        if transport == "connect-json":
            return self.connect(method, json_format.MessageToJson(request).encode(), "application/json")
        return self.connect(method, request.SerializeToString(), "application/proto")

    # ---- Firestore, read directly ----

    def wallet(self, uid: str) -> dict[str, Any] | None:
        snap = self.db.document("users", uid, "wallet", "points").get()
        return snap.to_dict() if snap.exists else None

    def state(self, uid: str) -> tuple[dict[str, Any] | None, list[str]]:
        entries = sorted(s.id for s in self.db.collection("users", uid, "ledger").stream())
        return self.wallet(uid), entries

    def key_exists(self, entry_id: str) -> bool:
        return bool(self.db.document("ledgerKeys", entry_id).get().exists)


def _seed(p: Points) -> tuple[str, str, str]:
    def credit(uid: str, key: str, amount: int, kind: Any) -> str:
        request = pb.CreditPointsRequest(uid=uid, amount=amount, idempotency_key=key, kind=kind)
        if kind == pb.KIND_PROMO:
            request.expires_at.FromDatetime(datetime(2031, 1, 1, tzinfo=UTC))
        code, response = p.grpc("CreditPoints", request)
        assert code == "OK", code
        return str(response.entry.entry_id)

    victim_entry = credit(p.victim, "seed-paid", 100, pb.KIND_PAID)
    credit(p.victim, "seed-promo", 40, pb.KIND_PROMO)
    other_entry = credit(p.other, "seed-other", 7, pb.KIND_PAID)
    other_reversed = credit(p.other, "seed-other-2", 5, pb.KIND_PAID)
    code, _ = p.grpc(
        "ReversePoints",
        pb.ReversePointsRequest(uid=p.other, original_entry_id=other_reversed, idempotency_key="seed-rev"),
    )
    assert code == "OK", code
    return victim_entry, other_entry, other_reversed


@pytest.fixture(scope="module")
def points(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Points]:
    tmp = tmp_path_factory.mktemp("points-hostile")
    grpc_port, http_port = free_port(), free_port()
    env = {
        **emulators.env(),
        "POINTS_AUTH": "disabled",
        "GRPC_PORT": str(grpc_port),
        "PORT": str(http_port),
        "HTTP_ROUTES": "points",
    }
    processes: list[ServiceProcess] = []
    db = firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"])
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    http = httpx.Client(timeout=20)
    try:
        processes.append(ServiceProcess("grpc", env, tmp, port=grpc_port).wait_ready())
        processes.append(ServiceProcess("serve", env, tmp, port=http_port).wait_ready())
        p = Points(
            stub=pb_grpc.PointsServiceStub(channel),
            channel=channel,
            http=http,
            base=f"http://127.0.0.1:{http_port}",
            db=db,
            processes=tuple(processes),
            victim=f"victim-{uuid.uuid4().hex[:12]}",
            other=f"other-{uuid.uuid4().hex[:12]}",
            victim_entry="",
            other_entry="",
            other_reversed="",
        )
        p.victim_entry, p.other_entry, p.other_reversed = _seed(p)
        yield p
    finally:
        http.close()
        channel.close()
        for process in processes:
            process.stop()
        db.close()


@pytest.fixture(autouse=True)
def nothing_moves(points: Points) -> Iterator[None]:
    """Around every test: the seeded wallets and ledgers do not change, and both servers still answer."""
    before = {uid: points.state(uid) for uid in (points.victim, points.other)}
    yield
    for process in points.processes:
        assert process.process.poll() is None, f"{process.command} died:\n{process.logs()[-3000:]}"
    after = {uid: points.state(uid) for uid in (points.victim, points.other)}
    assert after == before
    for transport in TRANSPORTS:
        code, balance = points.call(transport, "GetBalance", pb.GetBalanceRequest(uid=points.victim))
        assert code == "OK", transport
        assert (balance.paid_balance, balance.promo_balance) == (100, 40)


# Generated uids and keys that the service accepts are written: a prefix unique to the run
# keeps them apart from the fixed ids of other tests (their first characters are covered by
# the explicit cases and by the read-only uid test).
RUN = uuid.uuid4().hex[:8]


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


def fresh_uid() -> str:
    return f"h-{uuid.uuid4().hex[:16]}"


def _forged_token(uid: str, after: Any) -> str:
    raw = json.dumps({"u": uid, "after": after}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --------------------------------------------------------------------------------------
# Explicit cases, each over gRPC, Connect JSON and Connect binary
# --------------------------------------------------------------------------------------

Case = Callable[[Points], tuple[str, Message]]


def credit(**fields: Any) -> Case:
    def build(p: Points) -> tuple[str, Message]:
        request: dict[str, Any] = {"uid": p.victim, "amount": 10, "idempotency_key": key(), "kind": 1}
        request.update(fields)
        return "CreditPoints", pb.CreditPointsRequest(**request)

    return build


REFUSED_CREDITS: list[tuple[str, Case]] = [
    ("amount-zero", credit(amount=0)),
    ("amount-negative", credit(amount=-1)),
    ("amount-very-negative", credit(amount=-MAX_AMOUNT)),
    ("amount-int64-min", credit(amount=INT64_MIN)),
    ("amount-above-ceiling", credit(amount=MAX_AMOUNT + 1)),
    ("amount-int64-max", credit(amount=INT64_MAX)),
    ("uid-empty", credit(uid="")),
    (
        "uid-missing",
        lambda p: (
            "CreditPoints",
            pb.CreditPointsRequest(amount=1, idempotency_key=key(), kind=pb.KIND_PAID),
        ),
    ),
    ("uid-blank", credit(uid="   ")),
    ("uid-slash", credit(uid="a/b")),
    ("uid-path-into-victim", lambda p: credit(uid=f"{p.victim}/wallet/points")(p)),
    ("uid-dot", credit(uid=".")),
    ("uid-dotdot", credit(uid="..")),
    ("uid-reserved", credit(uid="__name__")),
    ("uid-129-chars", credit(uid="u" * 129)),
    ("uid-10k-chars", credit(uid="u" * 10_000)),
    ("uid-nul", credit(uid="a\x00b")),
    ("uid-newline", credit(uid="a\nb")),
    ("key-empty", credit(idempotency_key="")),
    ("key-blank", credit(idempotency_key="  ")),
    ("key-201-chars", credit(idempotency_key="k" * 201)),
    ("key-10kB", credit(idempotency_key="k" * 10_240)),
    ("key-slash", credit(idempotency_key="a/b")),
    ("key-control", credit(idempotency_key="k\x07")),
    ("key-too-many-bytes", credit(idempotency_key="\U0001f600" * 150)),  # 600 bytes: entry id > 500
    ("kind-unspecified", credit(kind=0)),
    ("kind-unknown-3", credit(kind=3)),
    ("kind-unknown-negative", credit(kind=-1)),
    ("kind-unknown-int32-max", credit(kind=INT32_MAX)),
    ("source-101-chars", credit(source="s" * 101)),
    ("metadata-33-entries", credit(metadata={f"k{i}": "v" for i in range(33)})),
    ("metadata-5000-entries", credit(metadata={f"k{i}": "v" * 20 for i in range(5000)})),
    ("metadata-key-dot", credit(metadata={"a.b": "v"})),
    ("metadata-key-dunder", credit(metadata={"__x": "v"})),
    ("metadata-key-empty", credit(metadata={"": "v"})),
    ("metadata-key-65-chars", credit(metadata={"m" * 65: "v"})),
    ("metadata-key-reserved", credit(metadata={"idempotencyKey": "forged"})),
    ("metadata-key-reversalOf", credit(metadata={"reversalOf": "api:local:x"})),
    ("metadata-value-1025-chars", credit(metadata={"k": "v" * 1025})),
    # The seeded key again with another amount, kind or user: a conflict, not a second credit.
    ("seed-key-other-amount", credit(idempotency_key="seed-paid", amount=101)),
    (
        "seed-key-other-kind",
        credit(idempotency_key="seed-paid", amount=100, kind=2, expires_at={"seconds": 1924992000}),
    ),
    # A promo credit needs its lot's expiry; a paid one takes none.
    ("promo-without-expiry", credit(kind=2)),
    ("paid-with-expiry", credit(kind=1, expires_at={"seconds": 1924992000})),
    ("other-users-key", credit(idempotency_key="seed-other", amount=7)),
]
CREDIT_CODES = {
    "seed-key-other-amount": "ALREADY_EXISTS",
    "seed-key-other-kind": "ALREADY_EXISTS",
    "other-users-key": "ALREADY_EXISTS",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("name", "case"), REFUSED_CREDITS, ids=[n for n, _ in REFUSED_CREDITS])
def test_refused_credits(points: Points, transport: str, name: str, case: Case) -> None:
    method, request = case(points)
    code, _ = points.call(transport, method, request)
    assert code == CREDIT_CODES.get(name, "INVALID_ARGUMENT"), name
    assert isinstance(request, pb.CreditPointsRequest)
    if request.idempotency_key.startswith("k-"):
        assert not points.key_exists(f"api:{CALLER}:{request.idempotency_key}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_replaying_the_seed_credit_changes_nothing(points: Points, transport: str) -> None:
    request = pb.CreditPointsRequest(
        uid=points.victim, amount=100, idempotency_key="seed-paid", kind=pb.KIND_PAID
    )
    code, response = points.call(transport, "CreditPoints", request)
    assert code == "OK"
    assert response.replayed
    assert response.entry.entry_id == points.victim_entry
    assert response.balance.paid_balance == 100


def reverse(**fields: Any) -> Case:
    def build(p: Points) -> tuple[str, Message]:
        request: dict[str, Any] = {"uid": p.victim, "idempotency_key": key()}
        request.update({k: v(p) if callable(v) else v for k, v in fields.items()})
        return "ReversePoints", pb.ReversePointsRequest(**request)

    return build


REFUSED_REVERSALS: list[tuple[str, Case, str]] = [
    # Another user's entry, through the victim's uid and the other way round.
    ("victim-reverses-others-entry", reverse(original_entry_id=lambda p: p.other_entry), "NOT_FOUND"),
    (
        "other-reverses-victims-entry",
        reverse(uid=lambda p: p.other, original_entry_id=lambda p: p.victim_entry),
        "NOT_FOUND",
    ),
    # Already reversed by its owner: the global ledgerKey belongs to the other user.
    (
        "victim-reverses-others-reversed-entry",
        reverse(original_entry_id=lambda p: p.other_reversed),
        "ALREADY_EXISTS",
    ),
    (
        "owner-reverses-again-with-another-key",
        reverse(uid=lambda p: p.other, original_entry_id=lambda p: p.other_reversed),
        "ALREADY_EXISTS",
    ),
    (
        "reverse-a-reversal",
        reverse(uid=lambda p: p.other, original_entry_id=lambda p: f"rev:{p.other_reversed}"),
        "INVALID_ARGUMENT",
    ),
    ("unknown-entry", reverse(original_entry_id="api:local:never-written"), "NOT_FOUND"),
    ("original-empty", reverse(original_entry_id=""), "INVALID_ARGUMENT"),
    ("original-slash", reverse(original_entry_id="a/b"), "INVALID_ARGUMENT"),
    ("original-reserved", reverse(original_entry_id="__x__"), "INVALID_ARGUMENT"),
    ("original-dot", reverse(original_entry_id="."), "INVALID_ARGUMENT"),
    ("original-too-long", reverse(original_entry_id="e" * 497), "INVALID_ARGUMENT"),  # rev: + 497 > 500
    ("original-10kB", reverse(original_entry_id="e" * 10_240), "INVALID_ARGUMENT"),
    (
        "key-empty",
        reverse(original_entry_id=lambda p: p.victim_entry, idempotency_key=""),
        "INVALID_ARGUMENT",
    ),
    (
        "key-10kB",
        reverse(original_entry_id=lambda p: p.victim_entry, idempotency_key="k" * 10_240),
        "INVALID_ARGUMENT",
    ),
    (
        "reason-501-chars",
        reverse(original_entry_id=lambda p: p.victim_entry, reason="r" * 501),
        "INVALID_ARGUMENT",
    ),
    ("uid-empty", reverse(uid="", original_entry_id=lambda p: p.victim_entry), "INVALID_ARGUMENT"),
    (
        "uid-slash",
        reverse(uid=lambda p: f"{p.victim}/ledger", original_entry_id=lambda p: p.victim_entry),
        "INVALID_ARGUMENT",
    ),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("name", "case", "expected"), REFUSED_REVERSALS, ids=[n for n, _, _ in REFUSED_REVERSALS]
)
def test_refused_reversals(points: Points, transport: str, name: str, case: Case, expected: str) -> None:
    method, request = case(points)
    code, _ = points.call(transport, method, request)
    assert code == expected, name
    assert not points.key_exists(f"rev:{points.victim_entry}")
    assert not points.key_exists(f"rev:{points.other_entry}")


BAD_UIDS = ["", "   ", "a/b", ".", "..", "__name__", "u" * 129, "u" * 10_000, "a\x00b", "\t"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("uid", BAD_UIDS, ids=range(len(BAD_UIDS)))
def test_reads_refuse_bad_uids(points: Points, transport: str, uid: str) -> None:
    assert points.call(transport, "GetBalance", pb.GetBalanceRequest(uid=uid))[0] == "INVALID_ARGUMENT"
    assert points.call(transport, "ListLedger", pb.ListLedgerRequest(uid=uid))[0] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("page_size", "expected"),
    [(-1, "INVALID_ARGUMENT"), (-(2**31), "INVALID_ARGUMENT"), (INT32_MAX, "OK"), (1, "OK")],
)
def test_list_ledger_page_sizes(points: Points, transport: str, page_size: int, expected: str) -> None:
    code, response = points.call(
        transport, "ListLedger", pb.ListLedgerRequest(uid=points.victim, page_size=page_size)
    )
    assert code == expected
    if code == "OK":
        assert 1 <= len(response.entries) <= 2  # a huge page size is coerced, not an error


def _other_users_token(p: Points) -> str:
    code, page = p.grpc("ListLedger", pb.ListLedgerRequest(uid=p.other, page_size=1))
    assert code == "OK"
    assert page.next_page_token
    return str(page.next_page_token)


FORGED_TOKENS: list[tuple[str, Callable[[Points], str]]] = [
    ("garbage", lambda p: "!!!not-base64!!!"),
    ("base64-not-json", lambda p: base64.urlsafe_b64encode(b"\xff\xfe\x00").decode()),
    ("json-list", lambda p: base64.urlsafe_b64encode(b"[1,2]").decode()),
    ("another-users-token", _other_users_token),
    ("other-uid-field", lambda p: _forged_token(p.other, p.other_entry)),
    ("unknown-entry", lambda p: _forged_token(p.victim, "api:local:never-written")),
    ("others-entry-id", lambda p: _forged_token(p.victim, p.other_entry)),
    ("after-empty", lambda p: _forged_token(p.victim, "")),
    ("after-number", lambda p: _forged_token(p.victim, 5)),
    ("after-slash", lambda p: _forged_token(p.victim, f"x/../../{p.other}/ledger/{p.other_entry}")),
    ("after-control", lambda p: _forged_token(p.victim, "a\x00b")),
    ("token-10kB", lambda p: "A" * 10_240),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("name", "forge"), FORGED_TOKENS, ids=[n for n, _ in FORGED_TOKENS])
def test_forged_page_tokens(
    points: Points, transport: str, name: str, forge: Callable[[Points], str]
) -> None:
    request = pb.ListLedgerRequest(uid=points.victim, page_size=1, page_token=forge(points))
    assert points.call(transport, "ListLedger", request)[0] == "INVALID_ARGUMENT", name


# A token whose `after` is not a usable Firestore document id must be refused before it
# reaches Firestore (which answers such ids with an error of its own).
RESERVED_AFTER = ["__x__", ".", "..", "\ud800"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("after", RESERVED_AFTER, ids=["dunder", "dot", "dotdot", "surrogate"])
def test_forged_page_token_with_unusable_cursor(points: Points, transport: str, after: str) -> None:
    request = pb.ListLedgerRequest(uid=points.victim, page_token=_forged_token(points.victim, after))
    code, _ = (
        points.grpc("ListLedger", request)
        if transport == "grpc"
        else _connect_no_5xx_assert(points, transport, request)
    )
    assert code == "INVALID_ARGUMENT"


def _connect_no_5xx_assert(p: Points, transport: str, request: Message) -> tuple[str, None]:
    """Connect without the helper's own 5xx assertion, so a failure reports the code."""
    if transport == "connect-json":
        body, content_type = json_format.MessageToJson(request).encode(), "application/json"
    else:
        body, content_type = request.SerializeToString(), "application/proto"
    response = p.connect_raw("ListLedger", body, content_type)
    if response.status_code == 200:
        return "OK", None
    return str(response.json().get("code", "")).upper(), None


# --------------------------------------------------------------------------------------
# Connect only: bytes no protobuf library would write
# --------------------------------------------------------------------------------------


def _json_credit(p: Points, **fields: Any) -> bytes:
    body: dict[str, Any] = {"uid": p.victim, "amount": "10", "idempotencyKey": key(), "kind": "KIND_PAID"}
    body.update(fields)
    return json.dumps(body).encode()


JSON_CREDITS: list[tuple[str, Callable[[Points], bytes]]] = [
    ("amount-int64-overflow", lambda p: _json_credit(p, amount=str(INT64_MAX + 1))),
    ("amount-int64-underflow", lambda p: _json_credit(p, amount=str(INT64_MIN - 1))),
    ("amount-int64-max", lambda p: _json_credit(p, amount=str(INT64_MAX))),
    ("amount-400-digits", lambda p: _json_credit(p, amount="9" * 400)),
    ("amount-number-overflow", lambda p: _json_credit(p, amount=INT64_MAX * 10)),
    ("amount-float", lambda p: _json_credit(p, amount=1.5)),
    ("amount-exponent", lambda p: _json_credit(p, amount=1e30)),
    ("amount-not-a-number", lambda p: _json_credit(p, amount="ten")),
    ("amount-bool", lambda p: _json_credit(p, amount=True)),
    ("amount-null-uid-missing", lambda p: json.dumps({"amount": "10", "idempotencyKey": key()}).encode()),
    ("kind-unknown-name", lambda p: _json_credit(p, kind="KIND_GOLD")),
    ("kind-lowercase", lambda p: _json_credit(p, kind="kind_paid")),
    ("kind-empty-name", lambda p: _json_credit(p, kind="")),
    ("kind-unknown-number", lambda p: _json_credit(p, kind=9)),
    ("kind-negative-number", lambda p: _json_credit(p, kind=-1)),
    ("kind-int32-overflow", lambda p: _json_credit(p, kind=2**31)),
    ("kind-fraction-string", lambda p: _json_credit(p, kind="1.5")),
    ("kind-hex-string", lambda p: _json_credit(p, kind="0x1")),
    ("uid-number", lambda p: _json_credit(p, uid=5)),
    ("uid-object", lambda p: _json_credit(p, uid={"a": 1})),
    ("uid-lone-surrogate", lambda p: _json_credit(p, uid="\ud800")),
    ("metadata-list", lambda p: _json_credit(p, metadata=["a"])),
    ("metadata-number-value", lambda p: _json_credit(p, metadata={"a": 1})),
    ("duplicate-amount-key", lambda p: b'{"uid":"%s","amount":"1","amount":"2"}' % p.victim.encode()),
    ("truncated", lambda p: _json_credit(p)[:-5]),
    ("empty-body", lambda p: b""),
    ("null", lambda p: b"null"),
    ("array", lambda p: b"[]"),
    ("string", lambda p: b'"credit"'),
    ("nan", lambda p: b'{"amount": NaN}'),
    ("deep-nesting", lambda p: b'{"metadata":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("not-utf8", lambda p: b'{"uid":"\xff\xfe"}'),
]


@pytest.mark.parametrize(("name", "body"), JSON_CREDITS, ids=[n for n, _ in JSON_CREDITS])
def test_hostile_json_credits(points: Points, name: str, body: Callable[[Points], bytes]) -> None:
    response = points.connect_raw("CreditPoints", body(points), "application/json")
    assert response.status_code == 400, (name, response.status_code, response.text[:300])
    assert response.json()["code"] == "invalid_argument"


@pytest.mark.parametrize("kind", [1.5, 2.9, True], ids=["1.5", "2.9", "true"])
def test_non_integer_json_kinds_are_refused(points: Points, kind: object) -> None:
    uid = fresh_uid()
    response = points.connect_raw(
        "CreditPoints", _json_credit(points, uid=uid, kind=kind), "application/json"
    )
    assert response.status_code == 400, response.text[:300]
    assert points.wallet(uid) is None


def test_oversized_metadata_map_over_connect(points: Points) -> None:
    metadata = {f"k{i}": "v" * 100 for i in range(50_000)}  # about 6 MB of JSON
    response = points.connect_raw("CreditPoints", _json_credit(points, metadata=metadata), "application/json")
    assert response.status_code == 429, response.text[:300]
    assert response.json()["code"] == "resource_exhausted"


def test_oversized_metadata_map_over_grpc(points: Points) -> None:
    request = credit(metadata={f"k{i}": "v" * 10 for i in range(100_000)})(points)[1]
    assert points.grpc("CreditPoints", request)[0] == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b'{"uid":"x"}', 415),
        ("application/xml", b"<uid>x</uid>", 415),
        ("multipart/form-data; boundary=x", b"--x--", 415),
        (None, b'{"uid":"x"}', 415),
        ("application/json", pb.GetBalanceRequest(uid="x").SerializeToString(), 400),
        ("application/proto", b'{"uid":"x"}', 400),
        ("application/proto", b"\xff\xff\xff\xff", 400),
        ("application/proto", b"\x0a\x02\xc3\x28", 400),  # uid with invalid UTF-8
        ("application/proto", b"\x10\xff", 400),  # truncated varint
    ],
)
def test_wrong_content_types_and_garbage_bytes(
    points: Points, content_type: str | None, body: bytes, status: int
) -> None:
    for method in ("CreditPoints", "GetBalance"):
        response = points.connect_raw(method, body, content_type)
        assert response.status_code == status, (method, response.text[:300])


def test_other_http_shapes(points: Points) -> None:
    get = points.http.get(f"{points.base}/{SERVICE}/GetBalance")
    assert get.status_code == 405
    unknown = points.http.post(
        f"{points.base}/{SERVICE}/DrainWallet", json={}, headers={"Content-Type": "application/json"}
    )
    assert 400 <= unknown.status_code < 500
    unknown_field = points.connect_raw(
        "GetBalance", json.dumps({"uid": points.victim, "paidBalance": "999999"}).encode(), "application/json"
    )
    assert unknown_field.status_code == 200  # ignored, like every Connect server: it cannot set a balance
    assert unknown_field.json()["paidBalance"] == "100"


# --------------------------------------------------------------------------------------
# gRPC only: bytes the client library would never send
# --------------------------------------------------------------------------------------

GARBAGE = [
    ("wire-format", b"\xff\xff\xff\xff"),
    ("bad-utf8-uid", b"\x0a\x02\xc3\x28"),
    ("truncated-varint", b"\x10\xff"),
    ("field-zero", b"\x00"),
]


@pytest.mark.parametrize("method", ["CreditPoints", "GetBalance"])
@pytest.mark.parametrize("body", [b for _, b in GARBAGE], ids=[n for n, _ in GARBAGE])
def test_garbage_protobuf_over_grpc(points: Points, method: str, body: bytes) -> None:
    assert points.grpc_raw(method, body) == "INVALID_ARGUMENT"


def test_undecodable_grpc_bodies_never_crash_the_server(points: Points) -> None:
    """After garbage bytes the server still answers, and never INTERNAL."""
    for _, body in GARBAGE:
        for method in RESPONSES:
            assert points.grpc_raw(method, body) in ("INVALID_ARGUMENT", "UNKNOWN")


# --------------------------------------------------------------------------------------
# Generated input (hypothesis)
# --------------------------------------------------------------------------------------

out_of_range_amounts = st.one_of(
    st.integers(min_value=INT64_MIN, max_value=0),
    st.integers(min_value=MAX_AMOUNT + 1, max_value=INT64_MAX),
    st.sampled_from([0, -1, INT64_MIN, INT64_MAX, MAX_AMOUNT + 1]),
)


@HYPOTHESIS
@given(
    amount=out_of_range_amounts,
    transport=st.sampled_from(TRANSPORTS),
    kind=st.sampled_from([pb.KIND_PAID, pb.KIND_PROMO]),
)
def test_generated_out_of_range_amounts_are_refused(
    points: Points, amount: int, transport: str, kind: Any
) -> None:
    request = pb.CreditPointsRequest(uid=points.victim, amount=amount, idempotency_key=key(), kind=kind)
    assert points.call(transport, "CreditPoints", request)[0] == "INVALID_ARGUMENT"
    assert not points.key_exists(f"api:{CALLER}:{request.idempotency_key}")


@HYPOTHESIS
@given(
    amount=st.one_of(
        st.integers(min_value=INT64_MAX + 1, max_value=10**40),
        st.integers(min_value=-(10**40), max_value=INT64_MIN - 1),
    ),
    as_string=st.booleans(),
)
def test_generated_int64_overflow_in_json(points: Points, amount: int, as_string: bool) -> None:
    body = _json_credit(points, amount=str(amount) if as_string else amount)
    response = points.connect_raw("CreditPoints", body, "application/json")
    assert response.status_code == 400, response.text[:300]
    assert response.json()["code"] == "invalid_argument"


@HYPOTHESIS
@given(uid=st.text(max_size=140))
def test_generated_uids_on_reads_agree_across_transports(points: Points, uid: str) -> None:
    codes = {
        (transport, method): points.call(transport, method, REQUESTS[method](uid=uid))[0]
        for transport in TRANSPORTS
        for method in ("GetBalance", "ListLedger")
    }
    assert set(codes.values()) <= {"OK", "INVALID_ARGUMENT"}, codes
    assert len(set(codes.values())) == 1, codes  # every transport and read agrees on the uid


def _written_as_answered(p: Points, uid: str, response: Any) -> None:
    """An accepted credit is in Firestore exactly as the service answered it."""
    entry = p.db.document("users", uid, "ledger", response.entry.entry_id).get()
    assert entry.exists
    assert entry.get("amount") == response.entry.amount
    wallet = p.wallet(uid)
    assert wallet is not None
    assert (wallet["paidBalance"], wallet["promoBalance"]) == (
        response.balance.paid_balance,
        response.balance.promo_balance,
    )


@HYPOTHESIS
@given(
    uid=st.text(max_size=140),
    amount=st.integers(min_value=1, max_value=MAX_AMOUNT),
    transport=st.sampled_from(TRANSPORTS),
)
def test_generated_uids_on_credits(points: Points, uid: str, amount: int, transport: str) -> None:
    uid = f"g{RUN}{uid}"
    request = pb.CreditPointsRequest(uid=uid, amount=amount, idempotency_key=key(), kind=pb.KIND_PAID)
    code, response = points.call(transport, "CreditPoints", request)
    assert code in ("OK", "INVALID_ARGUMENT"), code
    if code == "OK":
        assert response.entry.uid == uid
        _written_as_answered(points, uid, response)
    else:
        assert not points.key_exists(f"api:{CALLER}:{request.idempotency_key}")


@HYPOTHESIS
@given(idempotency_key=st.text(max_size=260), transport=st.sampled_from(TRANSPORTS))
def test_generated_idempotency_keys(points: Points, idempotency_key: str, transport: str) -> None:
    idempotency_key = f"g{RUN}{idempotency_key}"
    uid = fresh_uid()
    request = pb.CreditPointsRequest(uid=uid, amount=3, idempotency_key=idempotency_key, kind=pb.KIND_PROMO)
    code, response = points.call(transport, "CreditPoints", request)
    # ALREADY_EXISTS: hypothesis sent this key before, for another (fresh) uid.
    assert code in ("OK", "INVALID_ARGUMENT", "ALREADY_EXISTS"), code
    if code == "OK":
        assert response.entry.entry_id == f"api:{CALLER}:{idempotency_key}"
        assert not response.replayed
        _written_as_answered(points, uid, response)
    else:
        assert points.wallet(uid) is None


@HYPOTHESIS
@given(
    metadata=st.dictionaries(st.text(max_size=70), st.text(max_size=1100), max_size=36),
    source=st.text(max_size=110),
    transport=st.sampled_from(TRANSPORTS),
)
def test_generated_metadata_and_source(
    points: Points, metadata: dict[str, str], source: str, transport: str
) -> None:
    uid = fresh_uid()
    request = pb.CreditPointsRequest(
        uid=uid, amount=5, idempotency_key=key(), kind=pb.KIND_PAID, metadata=metadata, source=source
    )
    code, response = points.call(transport, "CreditPoints", request)
    assert code in ("OK", "INVALID_ARGUMENT"), code
    if code == "OK":
        _written_as_answered(points, uid, response)
        stored = points.db.document("users", uid, "ledger", response.entry.entry_id).get().to_dict() or {}
        assert stored["metadata"] == {**metadata, "idempotencyKey": request.idempotency_key}
        assert dict(response.entry.metadata) == stored["metadata"]
    else:
        assert points.wallet(uid) is None


@HYPOTHESIS
@given(
    original=st.one_of(st.text(max_size=520), st.text(max_size=40).map(lambda t: f"api:{CALLER}:{t}")),
    reason=st.text(max_size=520),
    transport=st.sampled_from(TRANSPORTS),
)
def test_generated_reversals_of_unknown_entries(
    points: Points, original: str, reason: str, transport: str
) -> None:
    assume(original not in (points.victim_entry, f"api:{CALLER}:seed-promo"))
    request = pb.ReversePointsRequest(
        uid=points.victim, original_entry_id=original, idempotency_key=key(), reason=reason
    )
    assert points.call(transport, "ReversePoints", request)[0] in ("NOT_FOUND", "INVALID_ARGUMENT")


def _usable_cursor(after: str) -> bool:
    """Not one of the reserved document ids tested above."""
    return after not in (".", "..") and not (after.startswith("__") and after.endswith("__"))


@HYPOTHESIS
@given(
    page_size=st.integers(min_value=-(2**31), max_value=INT32_MAX),
    token=st.one_of(
        st.just(""),
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
        st.text(max_size=200).filter(_usable_cursor).map(lambda t: f"forged:{t}"),
    ),
    transport=st.sampled_from(TRANSPORTS),
)
def test_generated_page_sizes_and_tokens(points: Points, page_size: int, token: str, transport: str) -> None:
    if token.startswith("forged:"):
        token = _forged_token(points.victim, token.removeprefix("forged:"))
    request = pb.ListLedgerRequest(uid=points.victim, page_size=page_size, page_token=token)
    code, response = points.call(transport, "ListLedger", request)
    assert code in ("OK", "INVALID_ARGUMENT"), code
    if page_size < 0:
        assert code == "INVALID_ARGUMENT"
    if code == "OK":
        assert len(response.entries) <= 2


@HYPOTHESIS
@given(body=st.binary(max_size=512), method=st.sampled_from(sorted(RESPONSES)))
def test_generated_garbage_protobuf_over_connect(points: Points, body: bytes, method: str) -> None:
    response = points.connect_raw(method, body, "application/proto")
    assert response.status_code in (200, 400, 404, 409), (response.status_code, response.text[:300])
    if response.status_code == 200:
        request = REQUESTS[method].FromString(body)  # it decoded, and was a request the service accepts
        assert getattr(request, "uid", "") not in (points.victim, points.other)


@HYPOTHESIS
@given(body=st.binary(max_size=512), method=st.sampled_from(sorted(RESPONSES)))
def test_generated_garbage_protobuf_over_grpc(points: Points, body: bytes, method: str) -> None:
    code = points.grpc_raw(method, body)
    try:
        REQUESTS[method].FromString(body)
    except DecodeError:
        assert code == "INVALID_ARGUMENT", code
    else:
        assert code in {"OK"} | REFUSALS, code
