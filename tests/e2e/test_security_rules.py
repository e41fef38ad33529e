"""firestore.rules, enforced by the real Firestore emulator, as the app's clients meet it.

A Firestore emulator of this module's own is started with `--rules firestore.rules`. The
tests call its REST API as clients: a signed-in user is an unsigned ID token (`alg: none`,
which the emulator accepts) naming the uid and any custom claims, a stranger sends no
Authorization header, and `Bearer owner` (the emulator's rules bypass) seeds the data and
checks what a call changed. Every collection the rules name, the app's and paynow-service's,
has allowed and denied cases: one test each, asserting 200 or 403 exactly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from paynow_service.adapters.emulators import Emulator, EmulatorError, launch_emulator, sdk_root, wait_ready
from tests.support.tokens import unsigned_token

RULES = Path(__file__).resolve().parents[2] / "firestore.rules"
PROJECT = "paynow-rules-test"
OWNER, OTHER, ADMIN = "alice", "bob", "carol"

pytestmark = [pytest.mark.emulators, pytest.mark.timeout(120)]


def _id_token(uid: str, **claims: Any) -> str:
    """A Firebase Auth ID token as the emulator reads it (it checks no signature)."""
    now = int(time.time())
    return unsigned_token(
        {
            "iss": f"https://securetoken.google.com/{PROJECT}",
            "aud": PROJECT,
            "sub": uid,
            "user_id": uid,
            "iat": now,
            "auth_time": now,
            "exp": now + 3600,
            "firebase": {"sign_in_provider": "password", "identities": {}},
            **claims,
        }
    )


# owner: the signed-in user whose uid the paths name; other: another signed-in user;
# admin: signed in with the `admin` custom claim; stranger: not signed in.
HEADERS: dict[str, dict[str, str]] = {
    "owner": {"Authorization": f"Bearer {_id_token(OWNER)}"},
    "other": {"Authorization": f"Bearer {_id_token(OTHER)}"},
    "admin": {"Authorization": f"Bearer {_id_token(ADMIN, admin=True)}"},
    "stranger": {},
}
UIDS = {"owner": OWNER, "other": OTHER, "admin": ADMIN, "stranger": ""}
BYPASS = {"Authorization": "Bearer owner"}  # the emulator's own token: rules do not apply


@dataclass(frozen=True)
class Case:
    actor: str  # owner, other, admin or stranger
    op: str  # get, list (path is a collection), create, update or delete
    path: str
    allowed: bool

    @property
    def id(self) -> str:
        return f"{self.path} {self.actor} {self.op} {'allowed' if self.allowed else 'denied'}"


def allow(actor: str, op: str, path: str) -> Case:
    return Case(actor, op, path, allowed=True)


def deny(actor: str, op: str, path: str) -> Case:
    return Case(actor, op, path, allowed=False)


APP_CASES = [
    # users/{userId}: the document only, its owner's.
    allow("owner", "get", "users/alice"),
    allow("owner", "update", "users/alice"),
    allow("owner", "create", "users/alice"),
    allow("owner", "delete", "users/alice"),
    deny("other", "get", "users/alice"),
    deny("other", "update", "users/alice"),
    deny("stranger", "get", "users/alice"),
    deny("stranger", "create", "users/alice"),
    allow("admin", "get", "users/alice"),  # the admin catch-all
    # Other subcollections of users/{userId}: the admin catch-all.
    deny("owner", "get", "users/alice/notes/n1"),
    deny("owner", "create", "users/alice/notes/n1"),
    allow("admin", "get", "users/alice/notes/n1"),
    allow("admin", "create", "users/alice/notes/n1"),
    # Legacy wallets/{userId} and ledger/{userId}/**.
    allow("owner", "get", "wallets/alice"),
    allow("owner", "update", "wallets/alice"),
    deny("other", "get", "wallets/alice"),
    deny("other", "update", "wallets/alice"),
    deny("stranger", "get", "wallets/alice"),
    allow("admin", "get", "wallets/alice"),
    allow("owner", "get", "ledger/alice"),
    deny("other", "get", "ledger/alice"),
    allow("owner", "create", "ledger/alice/entries/e1"),
    allow("owner", "get", "ledger/alice/entries/e1"),
    deny("other", "get", "ledger/alice/entries/e1"),
    deny("other", "create", "ledger/alice/entries/e1"),
    deny("stranger", "get", "ledger/alice/entries/e1"),
    # userMappings/{userId}.
    allow("owner", "get", "userMappings/alice"),
    allow("owner", "update", "userMappings/alice"),
    deny("other", "get", "userMappings/alice"),
    deny("other", "update", "userMappings/alice"),
    deny("stranger", "get", "userMappings/alice"),
    # products: anyone reads, admins write.
    allow("stranger", "get", "products/p1"),
    allow("stranger", "list", "products"),
    allow("other", "get", "products/p1"),
    deny("owner", "update", "products/p1"),
    deny("stranger", "create", "products/p1"),
    allow("admin", "create", "products/p1"),
    allow("admin", "update", "products/p1"),
    # fraudSignals: admins, or the user named by the signal's `uid`.
    allow("owner", "get", "fraudSignals/sig-alice"),
    allow("admin", "get", "fraudSignals/sig-alice"),
    deny("other", "get", "fraudSignals/sig-alice"),
    deny("stranger", "get", "fraudSignals/sig-alice"),
    deny("owner", "list", "fraudSignals"),  # rules are not filters: an unfiltered query is refused
    deny("owner", "update", "fraudSignals/sig-alice"),
    allow("admin", "update", "fraudSignals/sig-alice"),  # the admin catch-all
    # webhooks and riskDecisions: open to everyone (kept as the app has them).
    allow("stranger", "get", "webhooks/w1"),
    allow("stranger", "create", "webhooks/w1"),
    allow("stranger", "update", "webhooks/w1"),
    allow("other", "delete", "webhooks/w1"),
    deny("stranger", "create", "webhooks/w1/replies/r1"),  # below the documents: admin catch-all
    allow("stranger", "get", "riskDecisions/r1"),
    allow("stranger", "create", "riskDecisions/r1"),
    allow("other", "update", "riskDecisions/r1"),
    deny("stranger", "create", "riskDecisions/r1/notes/n1"),
    # Everything else needs the admin claim.
    allow("admin", "get", "settings/app"),
    allow("admin", "create", "settings/app"),
    allow("admin", "update", "settings/app"),
    deny("owner", "get", "settings/app"),
    deny("owner", "update", "settings/app"),
    deny("other", "create", "settings/app"),
    deny("stranger", "get", "settings/app"),
]

SERVICE_CASES = [
    # users/{uid}/wallet/{doc}: the owner and admins read; no client writes.
    allow("owner", "get", "users/alice/wallet/points"),
    allow("owner", "list", "users/alice/wallet"),
    allow("admin", "get", "users/alice/wallet/points"),
    deny("other", "get", "users/alice/wallet/points"),
    deny("other", "list", "users/alice/wallet"),
    deny("stranger", "get", "users/alice/wallet/points"),
    deny("owner", "create", "users/alice/wallet/points"),
    deny("owner", "update", "users/alice/wallet/points"),
    deny("owner", "delete", "users/alice/wallet/points"),
    deny("other", "update", "users/alice/wallet/points"),
    deny("stranger", "update", "users/alice/wallet/points"),
    deny("admin", "create", "users/alice/wallet/points"),
    deny("admin", "update", "users/alice/wallet/points"),
    deny("admin", "create", "users/alice/wallet/points/history/h1"),
    deny("owner", "get", "users/alice/wallet/points/history/h1"),
    # users/{uid}/ledger/{entry}.
    allow("owner", "get", "users/alice/ledger/e1"),
    allow("owner", "list", "users/alice/ledger"),
    allow("admin", "get", "users/alice/ledger/e1"),
    allow("admin", "list", "users/alice/ledger"),
    deny("other", "get", "users/alice/ledger/e1"),
    deny("other", "list", "users/alice/ledger"),
    deny("stranger", "get", "users/alice/ledger/e1"),
    deny("stranger", "list", "users/alice/ledger"),
    deny("owner", "create", "users/alice/ledger/e-new"),
    deny("owner", "update", "users/alice/ledger/e1"),
    deny("owner", "delete", "users/alice/ledger/e1"),
    deny("admin", "create", "users/alice/ledger/e-new"),
    deny("admin", "delete", "users/alice/ledger/e1"),
    # users/{uid}/subscriptions/{id}.
    allow("owner", "get", "users/alice/subscriptions/sub1"),
    allow("owner", "list", "users/alice/subscriptions"),
    allow("admin", "get", "users/alice/subscriptions/sub1"),
    deny("other", "get", "users/alice/subscriptions/sub1"),
    deny("stranger", "get", "users/alice/subscriptions/sub1"),
    deny("owner", "create", "users/alice/subscriptions/sub-new"),
    deny("owner", "update", "users/alice/subscriptions/sub1"),
    deny("admin", "update", "users/alice/subscriptions/sub1"),
    # webhookEvents: admins read; no client writes.
    allow("admin", "get", "webhookEvents/ev1"),
    allow("admin", "list", "webhookEvents"),
    deny("owner", "get", "webhookEvents/ev1"),
    deny("owner", "list", "webhookEvents"),
    deny("stranger", "get", "webhookEvents/ev1"),
    deny("owner", "create", "webhookEvents/ev-new"),
    deny("stranger", "create", "webhookEvents/ev-new"),
    deny("admin", "create", "webhookEvents/ev-new"),
    deny("admin", "update", "webhookEvents/ev1"),
    deny("admin", "delete", "webhookEvents/ev1"),
    deny("admin", "create", "webhookEvents/ev1/notes/n1"),
    # paynowOrders.
    allow("admin", "get", "paynowOrders/o1"),
    allow("admin", "list", "paynowOrders"),
    deny("owner", "get", "paynowOrders/o1"),
    deny("other", "get", "paynowOrders/o1"),
    deny("stranger", "get", "paynowOrders/o1"),
    deny("owner", "create", "paynowOrders/o-new"),
    deny("owner", "update", "paynowOrders/o1"),
    deny("admin", "create", "paynowOrders/o-new"),
    deny("admin", "update", "paynowOrders/o1"),
    deny("admin", "delete", "paynowOrders/o1"),
    # paynowCustomers (customer -> uid): the app had it open; now admins read, no client writes.
    allow("admin", "get", "paynowCustomers/cust-alice"),
    deny("owner", "get", "paynowCustomers/cust-alice"),
    deny("other", "get", "paynowCustomers/cust-alice"),
    deny("stranger", "get", "paynowCustomers/cust-alice"),
    deny("stranger", "list", "paynowCustomers"),
    deny("other", "create", "paynowCustomers/cust-new"),  # the hijack: a new customer pointed at bob
    deny("other", "update", "paynowCustomers/cust-alice"),  # the hijack: alice's customer pointed at bob
    deny("owner", "create", "paynowCustomers/cust-new"),
    deny("owner", "update", "paynowCustomers/cust-alice"),
    deny("stranger", "create", "paynowCustomers/cust-new"),
    deny("stranger", "update", "paynowCustomers/cust-alice"),
    deny("admin", "create", "paynowCustomers/cust-new"),
    deny("admin", "update", "paynowCustomers/cust-alice"),
    deny("admin", "delete", "paynowCustomers/cust-alice"),
    # ledgerKeys.
    allow("admin", "get", "ledgerKeys/k1"),
    deny("owner", "get", "ledgerKeys/k1"),
    deny("stranger", "get", "ledgerKeys/k1"),
    deny("owner", "create", "ledgerKeys/k-new"),
    deny("other", "create", "ledgerKeys/k-new"),
    deny("admin", "create", "ledgerKeys/k-new"),
    deny("admin", "update", "ledgerKeys/k1"),
    deny("admin", "delete", "ledgerKeys/k1"),
    # reconcileReports and reconcileRuns: the server SDK only (the bypass seeds them), no client.
    deny("admin", "get", "reconcileReports/r1"),
    deny("admin", "list", "reconcileReports"),
    deny("owner", "get", "reconcileReports/r1"),
    deny("stranger", "get", "reconcileReports/r1"),
    deny("admin", "create", "reconcileReports/r-new"),
    deny("admin", "get", "reconcileRuns/r1"),
    deny("owner", "get", "reconcileRuns/r1"),
    deny("admin", "update", "reconcileRuns/r1"),
    deny("stranger", "create", "reconcileRuns/r-new"),
]

CASES = APP_CASES + SERVICE_CASES


class Rest:
    """The emulator's REST API for documents, as one client or with the rules bypass."""

    def __init__(self, emulator: Emulator) -> None:
        self.base = f"http://{emulator.host_port}/v1/projects/{PROJECT}/databases/(default)/documents"
        self.http = httpx.Client(timeout=10, trust_env=False)

    def call(self, op: str, path: str, headers: dict[str, str], uid: str = "") -> httpx.Response:
        url = f"{self.base}/{path}"
        if op in ("get", "list"):
            return self.http.get(url, headers=headers)
        if op == "delete":
            return self.http.delete(url, headers=headers)
        exists = "false" if op == "create" else "true"
        body = {"fields": {"uid": {"stringValue": uid}, "written": {"booleanValue": True}}}
        return self.http.patch(url, params={"currentDocument.exists": exists}, json=body, headers=headers)

    def seed(self, path: str) -> None:
        """The document as the service or the app's server would have it (`uid` names its user)."""
        body = {"fields": {"uid": {"stringValue": OWNER}}}
        response = self.http.patch(f"{self.base}/{path}", json=body, headers=BYPASS)
        assert response.status_code == 200, response.text

    def remove(self, path: str) -> None:
        response = self.http.delete(f"{self.base}/{path}", headers=BYPASS)
        assert response.status_code == 200, response.text

    def stored(self, path: str) -> dict[str, Any] | None:
        response = self.http.get(f"{self.base}/{path}", headers=BYPASS)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        fields: dict[str, Any] = response.json().get("fields", {})
        return fields


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    """A Firestore emulator of this module's own, enforcing firestore.rules."""
    if sdk_root() is None:
        pytest.skip("gcloud SDK not installed: Firestore security rules tests skipped")
    try:
        emulator = launch_emulator(
            "firestore", project=PROJECT, log_dir=tmp_path_factory.mktemp("rules-emulator"), rules=RULES
        )
        wait_ready(emulator)
    except EmulatorError as err:
        pytest.fail(f"the Firestore emulator with firestore.rules did not start: {err}")
    client = Rest(emulator)
    try:
        yield client
    finally:
        client.http.close()
        emulator.stop()


def test_every_case_is_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rule(rest: Rest, case: Case) -> None:
    # The precondition, set with the bypass: the target is absent for a create, present otherwise.
    if case.op == "create":
        rest.remove(case.path)
    elif case.op == "list":
        rest.seed(f"{case.path}/seeded")
    else:
        rest.seed(case.path)

    response = rest.call(case.op, case.path, HEADERS[case.actor], uid=UIDS[case.actor])

    expected = 200 if case.allowed else 403
    assert response.status_code == expected, response.text
    if case.op in ("get", "list"):
        return
    # What the call left in the database, read with the bypass.
    after = rest.stored(case.path)
    if not case.allowed:
        if case.op == "create":
            assert after is None
        else:
            assert after == {"uid": {"stringValue": OWNER}}
    elif case.op == "delete":
        assert after is None
    else:
        assert after == {"uid": {"stringValue": UIDS[case.actor]}, "written": {"booleanValue": True}}
