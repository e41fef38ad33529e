"""The raw commits of `adapters/firestore_wire.py` write what the client itself would write."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.firestore_wire import FirestoreWire, _Document, _Write, encode_value

pytestmark = pytest.mark.emulators

SAMPLE = {
    "status": "queued",
    "attempts": 0,
    "ratio": 0.25,
    "flag": True,
    "nothing": None,
    "event": b"\x00\x01binary",
    "receivedAt": dt.datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=dt.UTC),
    "local": dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "nested": {"paid": 5, "promo": {"deep": "x"}, "empty": {}},
    "list": [1, "two", {"three": 3}],
    "emptyList": [],
    "field.with.dots": "kept as one field",
}


async def test_create_writes_what_the_client_writes(emulators: EmulatorStack) -> None:
    db = firestore.AsyncClient(project=emulators.firestore.project)
    wire = FirestoreWire(db)
    ours, theirs = f"wire-{uuid.uuid4().hex}", f"client-{uuid.uuid4().hex}"
    await wire.create("wireTest", ours, SAMPLE, 5)
    await db.collection("wireTest").document(theirs).create(SAMPLE)
    mine = (await db.collection("wireTest").document(ours).get()).to_dict()
    client = (await db.collection("wireTest").document(theirs).get()).to_dict()
    assert mine == client
    assert mine["local"] == dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
    with pytest.raises(gexc.AlreadyExists):
        await wire.create("wireTest", ours, {"status": "other"}, 5)
    assert (await db.collection("wireTest").document(ours).get()).to_dict() == client


async def test_merge_sets_top_level_fields_and_keeps_the_rest(emulators: EmulatorStack) -> None:
    db = firestore.AsyncClient(project=emulators.firestore.project)
    wire = FirestoreWire(db)
    kept, fresh = f"kept-{uuid.uuid4().hex}", f"fresh-{uuid.uuid4().hex}"
    await db.collection("wireTest").document(kept).create({"status": "queued", "publishedAt": None})
    stamp = dt.datetime(2026, 12, 2, 11, 0, tzinfo=dt.UTC)
    await wire.merge("wireTest", [(kept, {"publishedAt": stamp}), (fresh, {"publishedAt": stamp})], 5)
    assert (await db.collection("wireTest").document(kept).get()).to_dict() == {
        "status": "queued",
        "publishedAt": stamp,
    }
    assert (await db.collection("wireTest").document(fresh).get()).to_dict() == {"publishedAt": stamp}
    with pytest.raises(TypeError, match="top-level"):
        await wire.merge("wireTest", [(kept, {"map": {"a": 1}})], 5)


@pytest.mark.parametrize("value", [dt.datetime(2026, 1, 1), object(), {1, 2}])
def test_values_without_a_firestore_form_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        encode_value(value)


async def test_a_transaction_begun_by_its_first_read_reads_commits_and_holds_what_it_read(
    emulators: EmulatorStack,
) -> None:
    """`begin_with_read`: the documents and a transaction in one round trip, later reads and the commit
    in it; two such transactions that read one document cannot both commit a write of it."""
    db = firestore.AsyncClient(project=emulators.firestore.project)
    wire = FirestoreWire(db)
    doc_id, missing = f"tx-{uuid.uuid4().hex}", f"none-{uuid.uuid4().hex}"
    await db.collection("wireTest").document(doc_id).create({"n": 1})
    name = wire.name("wireTest", doc_id)
    outside = await wire.batch_get([name, wire.name("wireTest", missing)], 5)  # no transaction at all
    assert outside == {name: {"n": 1}, wire.name("wireTest", missing): None}

    found, first = await wire.begin_with_read([name, wire.name("wireTest", missing)], 5)
    assert first
    assert found == {name: {"n": 1}, wire.name("wireTest", missing): None}
    assert await wire.batch_get([name], 5, first) == {name: {"n": 1}}  # a later read in it
    _, second = await wire.begin_with_read([name], 5)
    assert second
    assert second != first

    outcomes = []
    for transaction, value in ((first, 2), (second, 3)):
        doc = _Document(name=name, fields={"n": encode_value(value)})
        try:
            await wire.commit([_Write(update=doc)], 10, transaction)
            outcomes.append(value)
        except gexc.Aborted:
            outcomes.append(None)
    committed = [value for value in outcomes if value is not None]
    assert len(committed) == 1, outcomes
    assert (await db.collection("wireTest").document(doc_id).get()).to_dict() == {"n": committed[0]}
