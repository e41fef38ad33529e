"""PayNow's published webhook schema as test data: examples, generators and a validator.

Everything is derived from tests/fixtures/paynow-webhook-definitions.json (PayNow's
OpenAPI 3.1 document; `webhooks.<EVENT>.post.requestBody`), so fixtures follow PayNow's
real shapes instead of ones we invented:

- `example_event(event_type)`: one realistic, schema-valid payload (deterministic);
- `valid_events(event_type=None)`: a hypothesis strategy of schema-valid payloads,
  with values kept plausible (positive quantities, unique line ids, flake-id strings)
  and unknown extra fields, because PayNow adds fields;
- `mutated_events()`: payloads broken in one place (a key removed, a value of the
  wrong type, huge, null, deeply nested);
- `validate(instance, schema)`: a small validator for the keywords the document uses.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "paynow-webhook-definitions.json"
DEFAULT_UID = "user-7f3a9c"
PII_KEYS = frozenset(
    {
        "billing_email",
        "billing_name",
        "customer_ip",
        "name",
        "avatar_url",
        "steam",
        "minecraft",
        "profile",
        "discord_user_name",
        "discord_user_id",
        "discord_user_avatar_hash",
        "billing_address_country",
        "billing_country",
    }
)
# Nullable fields that change what an order line means: in a one-time-purchase
# example they stay null (a subscription or trial line is not credited by the order).
_NULL_IN_EXAMPLES = frozenset(
    {
        "subscription_id",
        "subscription_line_id",
        "subscription_interval_value",
        "subscription_interval_scale",
        "trial_id",
        "gift_to_customer",
        "gift_to_customer_id",
        "revoked_at",
        "revoke_reason",
        "removed_at",
        "canceled_at",
        "cancel_reason",
        "sale_id",
    }
)
Schema = dict[str, Any]
# Who PayNow says the buyer is: personal data that must never reach an event or a log.
_CUSTOMER_IDENTITY = {
    "name": "John",
    "steam": {
        "id": "76561197960287930",
        "name": "John",
        "avatar_url": "https://avatars.steamstatic.com/b5bd5.jpg",
    },
    "minecraft": {
        "id": "069a79f4-44e9-4726-a5be-fca90e38aaf5",
        "name": "Notch",
        "avatar_url": "https://mc-heads.net/avatar/069a79f444e94726a5befca90e38aaf5",
    },
    "profile": {
        "id": "76561197960287930",
        "platform": "steam",
        "name": "John",
        "avatar_url": "https://avatars.steamstatic.com/b5bd5.jpg",
    },
}


@functools.cache
def spec() -> Schema:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def event_types() -> tuple[str, ...]:
    return tuple(spec()["webhooks"])


def event_schema(event_type: str) -> Schema:
    return spec()["webhooks"][event_type]["post"]["requestBody"]["content"]["application/json"]["schema"]


def resolve(schema: Schema) -> Schema:
    """Follow `$ref` (local JSON pointers) and flatten a lone `allOf`."""
    while True:
        if "$ref" in schema:
            node: Any = spec()
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = {**{k: v for k, v in schema.items() if k != "allOf"}, **resolve(schema["allOf"][0])}
        else:
            return schema


def _types(schema: Schema) -> list[str]:
    kind = schema.get("type")
    return kind if isinstance(kind, list) else [kind] if kind else []


def _non_null(schema: Schema) -> Schema | None:
    """The non-null alternative of a nullable schema (type list or oneOf with null)."""
    schema = resolve(schema)
    if "oneOf" in schema or "anyOf" in schema:
        options = [resolve(s) for s in schema.get("oneOf", schema.get("anyOf", []))]
        real = [s for s in options if _types(s) != ["null"]]
        return real[0] if real else None
    kinds = [t for t in _types(schema) if t != "null"]
    if not kinds and _types(schema):
        return None
    return {**schema, "type": kinds[0]} if kinds else schema


def _nullable(schema: Schema) -> bool:
    schema = resolve(schema)
    if "oneOf" in schema or "anyOf" in schema:
        return any(_types(resolve(s)) == ["null"] for s in schema.get("oneOf", schema.get("anyOf", [])))
    return "null" in _types(schema)


# --------------------------------------------------------------------------- examples


def example_event(event_type: str, *, uid: str = DEFAULT_UID) -> dict[str, Any]:
    """A realistic payload of `event_type`: schema examples, distinct flake ids, the
    checkout carrying `metadata.uid`, lines linked to their checkout lines."""
    counter = itertools.count(1)
    payload = _example(event_schema(event_type), "", counter)
    payload["event_type"] = event_type
    body = payload["body"]
    for checkout in _find(body, "checkout"):
        checkout["metadata"] = {"uid": uid} if uid else {}
        for line in checkout.get("lines", []):
            line["metadata"] = {"uid": uid} if uid else {}
    order = body.get("order") if event_type == "ON_DISCORD_ACCOUNT_LINKED_TO_CHECKOUT" else body
    if isinstance(order, dict) and isinstance(order.get("lines"), list) and "checkout" in order:
        checkout_lines = order["checkout"]["lines"]
        for line, checkout_line in zip(order["lines"], checkout_lines, strict=False):
            line["checkout_line_id"] = checkout_line["id"]
            line["product_id"] = checkout_line["product_id"]
        order["status"] = "completed"
    if "billing_cycle_sequence" in body and body.get("checkout"):
        body["checkout_line_id"] = body["checkout"]["lines"][0]["id"]
        body["product_id"] = body["checkout"]["lines"][0]["product_id"]
        for line in body.get("lines", []):
            line["subscription_id"] = body["id"]
            line["product_id"] = body["product_id"]
        body["status"] = "canceled" if event_type == "ON_SUBSCRIPTION_CANCELED" else "active"
    for customer in _find(payload, "customer") + _find(payload, "gift_to_customer"):
        customer.update(copy.deepcopy(_CUSTOMER_IDENTITY))
    if event_type == "ON_REFUND":
        body["status"] = "completed"
    if event_type.startswith("ON_CHARGEBACK"):
        body["status"] = "closed" if event_type.endswith("CLOSED") else "open"
        body["chargeback_status"] = "won" if event_type.endswith("CLOSED") else "needs_response"
    return payload


def _find(node: Any, key: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get(key), dict):
            found.append(node[key])
        for value in node.values():
            found.extend(_find(value, key))
    elif isinstance(node, list):
        for value in node:
            found.extend(_find(value, key))
    return found


def _example(schema: Schema, name: str, counter: itertools.count[int]) -> Any:
    if _nullable(schema) and name in _NULL_IN_EXAMPLES:
        return None
    schema = _non_null(schema) or {}
    kind = (_types(schema) or ["object" if "properties" in schema else "string"])[0]
    if "enum" in schema:
        return schema.get("example", schema["enum"][0])
    if kind == "object":
        return {key: _example(sub, key, counter) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_example(schema.get("items", {}), name, counter)]
    if schema.get("format") == "flake-id":
        return str(411486491630370816 + next(counter) * 4096)
    if "example" in schema:
        return schema["example"]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return "2024-01-15T10:30:00Z"
    return f"{name or 'value'}-example"


# --------------------------------------------------------------------------- strategies

_FLAKE = st.integers(min_value=10**17, max_value=2**63 - 1).map(str)
_DATE_TIME = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)).map(
    lambda moment: moment.replace(microsecond=0, tzinfo=UTC).isoformat().replace("+00:00", "Z")
)
_PRINTABLE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
_TEXT = st.text(alphabet=_PRINTABLE, max_size=12)
UIDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,27}", fullmatch=True)
_SCALARS = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | _TEXT
# PayNow adds fields: valid payloads carry unknown ones the parser must ignore.
_EXTRA = st.dictionaries(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True), _SCALARS, max_size=1)
_METADATA = st.fixed_dictionaries({}, optional={"uid": UIDS, "source": _TEXT})
_STATUS_WORDS = (
    "created",
    "approved",
    "processing",
    "completed",
    "canceled",
    "failed",
    "active",
    "open",
    "closed",
    "won",
    "lost",
    "needs_response",
)
_INT_RANGES = {"quantity": (1, 100), "billing_cycle_sequence": (1, 60)}


def valid_events(event_type: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Schema-valid payloads of `event_type` (any of the 19 when None)."""
    if event_type is None:
        return st.sampled_from(event_types()).flatmap(_event_strategy)
    return _event_strategy(event_type)


@functools.cache
def _event_strategy(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    body = event_schema(event_type)["properties"]["body"]
    return st.fixed_dictionaries(
        {"event_type": st.just(event_type), "event_id": _FLAKE, "body": _strategy(body, "body")}
    )


def _strategy(schema: Schema, name: str) -> st.SearchStrategy[Any]:
    base = _non_null(schema)
    strategy = st.none() if base is None else _base_strategy(base, name)
    return st.none() | strategy if _nullable(schema) else strategy


def _base_strategy(schema: Schema, name: str) -> st.SearchStrategy[Any]:
    kind = (_types(schema) or ["object" if "properties" in schema else "string"])[0]
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "object":
        properties = schema.get("properties", {})
        if not properties:
            return _METADATA if name == "metadata" else st.dictionaries(_TEXT, _SCALARS, max_size=2)
        required = set(schema.get("required", ()))
        fixed = {k: _strategy(v, k) for k, v in properties.items() if k in required}
        optional = {k: _strategy(v, k) for k, v in properties.items() if k not in required}
        known = st.fixed_dictionaries(fixed, optional=optional)
        return st.tuples(known, _EXTRA).map(lambda parts: {**parts[1], **parts[0]})
    if kind == "array":
        items = resolve(schema.get("items", {}))
        unique = "id" in items.get("properties", {})
        return st.lists(
            _strategy(items, name),
            min_size=1 if name == "lines" else 0,
            max_size=2 if name == "lines" else 1,
            unique_by=(lambda item: item["id"]) if unique else None,
        )
    if kind == "integer":
        low, high = _INT_RANGES.get(name, (0, 10**7))
        return st.integers(min_value=low, max_value=high)
    if kind == "number":
        return st.floats(min_value=0, max_value=1e7, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if schema.get("format") == "flake-id":
        return _FLAKE
    if schema.get("format") == "date-time":
        return _DATE_TIME
    if name.endswith("status"):
        return st.sampled_from(_STATUS_WORDS)
    if name == "currency":
        return st.sampled_from(("USD", "EUR", "GBP"))
    return _TEXT


# --------------------------------------------------------------------------- mutations

_WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**30, -(10**30), -1, 0, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "a/b", "../..", "__x__", " spaced ", "x" * 100_000, "\u202e\u0000"]),
    st.builds(lambda: json.loads("[" * 200 + "]" * 200)),  # fresh: later mutations write into it
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(_TEXT, _SCALARS, max_size=3),
)


@st.composite
def mutated_events(draw: st.DrawFn, event_type: str | None = None) -> dict[str, Any]:
    """A payload (usually of a real type) with one to three values removed or replaced."""
    kinds = st.just(event_type) if event_type else st.sampled_from(event_types())
    payload: dict[str, Any] = draw(
        st.one_of(kinds.map(example_event), valid_events(event_type) if event_type else valid_events())
    )
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = list(_paths(payload, ()))
        path = draw(st.sampled_from(paths))
        parent: Any = payload
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_WRONG_VALUES)
    return payload


def _paths(node: Any, prefix: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found: list[tuple[Any, ...]] = []
    for key, value in children:
        found.append((*prefix, key))
        if len(prefix) < 8:
            found.extend(_paths(value, (*prefix, key)))
    return found


# --------------------------------------------------------------------------- validator


def validate_event(payload: dict[str, Any]) -> list[str]:
    """Errors of `payload` against the schema of its own event type ([] when valid)."""
    return validate(payload, event_schema(payload["event_type"]))


def validate(instance: Any, schema: Schema, path: str = "$") -> list[str]:
    """A small JSON Schema validator for the keywords PayNow's document uses."""
    schema = resolve(schema)
    if "oneOf" in schema:
        matches = sum(not validate(instance, option, path) for option in schema["oneOf"])
        return [] if matches == 1 else [f"{path}: matches {matches} oneOf alternatives"]
    if "anyOf" in schema:
        ok = any(not validate(instance, option, path) for option in schema["anyOf"])
        return [] if ok else [f"{path}: matches no anyOf alternative"]
    errors = [e for option in schema.get("allOf", ()) for e in validate(instance, option, path)]
    kinds = _types(schema)
    if kinds and not any(_is_type(instance, kind) for kind in kinds):
        return [*errors, f"{path}: {type(instance).__name__} is not {kinds}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in enum")
    if isinstance(instance, dict):
        errors += [f"{path}: missing {key}" for key in schema.get("required", ()) if key not in instance]
        for key, sub in schema.get("properties", {}).items():
            if key in instance:
                errors += validate(instance[key], sub, f"{path}.{key}")
    if isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            errors += validate(item, schema["items"], f"{path}[{index}]")
    if isinstance(instance, str):
        fmt = schema.get("format")
        if fmt == "flake-id" and not instance.isdigit():
            errors.append(f"{path}: {instance!r} is not a flake id")
        if fmt == "date-time" and not _is_date_time(instance):
            errors.append(f"{path}: {instance!r} is not a date-time")
    return errors


def _is_type(value: Any, kind: str) -> bool:
    checks = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return checks[kind]


def _is_date_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value
