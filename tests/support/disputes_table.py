"""The refund and dispute table of docs/refunds-and-disputes.md, as runnable cases.

Each row of the table is parsed into `Row` (its steps, the balances and the entry ids it
must end with); `Case` turns a row into PayNow webhook payloads for one fresh user and
order, step by step, so the integration test (processing core on the emulator) and the
end-to-end test (webhook, Pub/Sub, worker) run the very rows the document shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paynow_service import hookimpl
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.events import PaymentEvent, Refund
from paynow_service.domain.ledger import (
    order_line_entry_id,
    recredit_entry_id,
    reversal_entry_id,
    subscription_entry_id,
)
from paynow_service.hookspecs import CreditedEntry
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.stack import PLAN, PRODUCT, unique

DOC = Path(__file__).resolve().parents[2] / "docs" / "refunds-and-disputes.md"
PACK_POINTS = 500  # the catalog's PRODUCT, one unit, priced 500 cents


class RefundByAmount:
    """The tests' refund plugin: a refund naming an amount takes back one point per refunded cent;
    one naming none (0) takes back everything (the default)."""

    @hookimpl
    def paynow_refund_points(
        self, event: PaymentEvent, refund: Refund, credited: tuple[CreditedEntry, ...], catalog: Catalog
    ) -> int | None:
        return refund.amount or None


@dataclass(frozen=True)
class Row:
    number: int
    case: str
    steps: tuple[str, ...]
    paid: int
    promo: int
    entries: tuple[str, ...]  # with L, S1, S2 standing for the order's line and the plan's cycles

    @property
    def waits(self) -> float:
        return sum(float(s.split()[1]) for s in self.steps if s.startswith("wait "))


def rows(doc: Path = DOC) -> list[Row]:
    text = doc.read_text()
    table = text.split("<!-- disputes-table:start -->")[1].split("<!-- disputes-table:end -->")[0]
    found = []
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        number, case, events, paid, promo, entries = cells
        found.append(
            Row(
                number=int(number),
                case=case,
                steps=tuple(s.strip() for s in events.split(";")),
                paid=int(paid),
                promo=int(promo),
                entries=tuple(e.strip() for e in entries.split(",")),
            )
        )
    return found


@dataclass
class Case:
    """One row played for a fresh user and order."""

    row: Row
    uid: str = field(default_factory=lambda: unique("disputes"))
    order_id: str = field(default_factory=flake_id)
    customer_id: str = field(default_factory=flake_id)
    subscription_id: str = field(default_factory=flake_id)
    line_id: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # r1, d1 ... -> PayNow refund and dispute ids

    def payload(self, step: str) -> dict[str, Any] | None:
        """The webhook payload of one step (None for `wait`)."""
        words = step.split()
        common = {"uid": self.uid, "order_id": self.order_id, "customer_id": self.customer_id}
        if words[0] == "wait":
            return None
        if words[0] in ("order", "order+plan"):
            event = build_event("ON_ORDER_COMPLETED", product_id=PRODUCT, price=500, **common)
            line = event["body"]["lines"][0]
            if words[0] == "order+plan":
                line.update(product_id=PLAN, subscription_id=self.subscription_id)
            self.line_id = str(line["id"])
            return event
        if words[0] == "cycle":
            cycle = int(words[1])
            kind = "ON_SUBSCRIPTION_ACTIVATED" if cycle == 1 else "ON_SUBSCRIPTION_RENEWED"
            return build_event(
                kind, uid=self.uid, customer_id=self.customer_id, product_id=PLAN,
                subscription_id=self.subscription_id, billing_cycle_sequence=cycle,
            )  # fmt: skip
        if words[0] == "refund":
            event = build_event("ON_REFUND", product_id=PRODUCT, status=words[2], **common)
            event["body"]["amount"] = int(words[3]) if len(words) > 3 else 0
        elif words[0] == "chargeback":
            event = build_event("ON_CHARGEBACK", product_id=PRODUCT, **common)
        elif words[0] == "closed":
            event = build_event(
                "ON_CHARGEBACK_CLOSED", product_id=PRODUCT, chargeback_status=words[2], **common
            )
        else:
            raise ValueError(f"row {self.row.number}: unknown step {step!r}")
        event["body"]["id"] = self.ids.setdefault(words[1], flake_id())
        return event

    def entry_ids(self) -> set[str]:
        """The row's entries with L, S1, S2 replaced by this case's ids (call after the order step)."""
        names = {
            "L": order_line_entry_id(self.order_id, self.line_id),
            "S1": subscription_entry_id(self.subscription_id, 1),
            "S2": subscription_entry_id(self.subscription_id, 2),
        }
        found = set()
        for entry in self.row.entries:
            prefix, _, name = entry.rpartition(":")
            if not prefix:
                found.add(names[name])
                continue
            kind = prefix.rstrip("0123456789")
            generation = int(prefix[len(kind) :] or 1)
            build = reversal_entry_id if kind == "rev" else recredit_entry_id
            found.add(build(names[name], generation))
        return found
