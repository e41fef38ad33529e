"""The raw writes of `firestore_wire_writes.py` are the messages the client itself builds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.cloud.firestore_v1 import _helpers, transforms
from google.cloud.firestore_v1.types import write as write_types
from hypothesis import given, settings
from hypothesis import strategies as st

from paynow_service.adapters.firestore_wire_writes import create_write, set_write, update_write

NAME = "projects/p/databases/(default)/documents/users/u1/wallet/points"
keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.datetimes(timezones=st.just(dt.UTC)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.dictionaries(keys, inner, max_size=3), st.lists(scalars, max_size=3)),
    max_leaves=8,
)
documents = st.dictionaries(keys, values, min_size=1, max_size=5)


def client_pb(writes: list[Any]) -> Any:
    [only] = writes
    return write_types.Write.pb(only)


def same(ours: Any, theirs: Any) -> None:
    assert ours is not None
    assert ours.update == theirs.update
    assert list(ours.update_mask.field_paths) == list(theirs.update_mask.field_paths)
    assert ours.HasField("update_mask") == theirs.HasField("update_mask")
    assert ours.current_document == theirs.current_document
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)


@settings(max_examples=150, deadline=None)
@given(documents)
def test_create_and_set_are_the_clients(data: dict[str, Any]) -> None:
    same(create_write(NAME, data), client_pb(_helpers.pbs_for_create(NAME, data)))
    same(set_write(NAME, data), client_pb(_helpers.pbs_for_set_no_merge(NAME, data)))


@settings(max_examples=150, deadline=None)
@given(documents)
def test_merge_is_the_clients(data: dict[str, Any]) -> None:
    same(set_write(NAME, data, merge=True), client_pb(_helpers.pbs_for_set_with_merge(NAME, data, True)))


def test_merge_with_deletes_and_ids_that_need_quoting_is_the_clients() -> None:
    data = {
        "parked": {"ev.1": {"status": "x"}, "plain": transforms.DELETE_FIELD},
        "parkedAt": transforms.DELETE_FIELD,
        "updatedAt": dt.datetime(2026, 12, 2, tzinfo=dt.UTC),
        "empty": {},
        "a-b": 1,
    }
    same(set_write(NAME, data, merge=True), client_pb(_helpers.pbs_for_set_with_merge(NAME, data, True)))


def test_update_is_the_clients() -> None:
    data = {
        "status": "processed",
        "result.points": 5,
        "`parked`.`ev.1`": transforms.DELETE_FIELD,
        "counts": {"paid": 1, "promo": {"x": 2}},
        "processedAt": dt.datetime(2026, 12, 2, tzinfo=dt.UTC),
    }
    same(update_write(NAME, data), client_pb(_helpers.pbs_for_update(NAME, data, None)))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,5}", fullmatch=True), values, min_size=1))
def test_update_of_simple_keys_is_the_clients(data: dict[str, Any]) -> None:
    same(update_write(NAME, data), client_pb(_helpers.pbs_for_update(NAME, data, None)))


@pytest.mark.parametrize(
    "build",
    [
        lambda: create_write(NAME, {"at": transforms.SERVER_TIMESTAMP}),
        lambda: set_write(NAME, {"n": transforms.Increment(1)}, merge=True),
        lambda: set_write(NAME, {"a": 1}, merge=["a"]),
        lambda: set_write(NAME, {}, merge=True),
        lambda: update_write(NAME, {"a": 1, "a.b": 2}),
        lambda: update_write(NAME, {}),
        lambda: create_write(NAME, {"gone": transforms.DELETE_FIELD}),
    ],
)
def test_what_only_the_client_builds_is_left_to_it(build: Any) -> None:
    assert build() is None
