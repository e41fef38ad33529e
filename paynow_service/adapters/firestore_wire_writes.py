"""Raw `Write` messages for a transaction's create, set and update, as the client would build them.

The client's `pbs_for_create`, `pbs_for_set_no_merge`, `pbs_for_set_with_merge` and
`pbs_for_update` walk the data into FieldPath objects and proto-plus messages. These build the
same messages directly (tests/unit/test_firestore_wire_writes.py compares them with the
client's on generated documents). Values and DELETE_FIELD are supported; any other sentinel
(SERVER_TIMESTAMP, Increment, ArrayUnion ...) or a merge limited to named fields returns None,
and the caller lets the client build that write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.cloud.firestore_v1 import transforms
from google.cloud.firestore_v1.field_path import FieldPath

from paynow_service.adapters.firestore_wire import (
    _Document,
    _DocumentMask,
    _Precondition,
    _Write,
    encode_value,
)

_SENTINELS = (transforms.Sentinel, transforms._ValueList, transforms._NumericValue)


class _Unsupported(Exception):
    """A value only the client knows how to write (a transform)."""


def create_write(name: str, data: Mapping[str, Any]) -> Any | None:
    fields = _plain_fields(data)
    if fields is None:
        return None
    return _Write(update=_Document(name=name, fields=fields), current_document=_Precondition(exists=False))


def set_write(name: str, data: Mapping[str, Any], merge: object = False) -> Any | None:
    if merge is False:
        fields = _plain_fields(data)
        return None if fields is None else _Write(update=_Document(name=name, fields=fields))
    if merge is not True or not data:
        return None  # merge=[named fields], or nothing to merge: the client's
    try:
        leaves = sorted(_leaves(data, ()), key=lambda leaf: leaf[0])
    except _Unsupported:
        return None
    doc = _Document(name=name)
    paths = []
    for parts, value in leaves:
        paths.append(FieldPath(*parts).to_api_repr())
        if value is not transforms.DELETE_FIELD:
            _put(doc.fields, parts, value)
    return _Write(update=doc, update_mask=_DocumentMask(field_paths=paths))


def update_write(name: str, field_updates: Mapping[str, Any]) -> Any | None:
    """`update()`: keys are field paths ("a.b" is b inside a); a map value replaces the whole field."""
    if not field_updates:
        return None  # the client raises its own "empty document" error
    tops = sorted((FieldPath.from_string(key).parts, value) for key, value in field_updates.items())
    doc = _Document(name=name)
    for index, (parts, value) in enumerate(tops):
        if index and parts[: len(tops[index - 1][0])] == tops[index - 1][0]:
            return None  # conflicting paths ("a" and "a.b"): the client raises
        if value is transforms.DELETE_FIELD:
            continue
        try:
            _check_plain(value)
        except _Unsupported:
            return None
        _put(doc.fields, parts, value)
    mask = _DocumentMask(field_paths=[FieldPath(*parts).to_api_repr() for parts, _ in tops])
    return _Write(update=doc, update_mask=mask, current_document=_Precondition(exists=True))


def _plain_fields(data: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        _check_plain(data)
    except _Unsupported:
        return None
    return {str(key): encode_value(value) for key, value in data.items()}


def _check_plain(value: Any) -> None:
    if isinstance(value, _SENTINELS):
        raise _Unsupported
    if isinstance(value, Mapping):
        for item in value.values():
            _check_plain(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_plain(item)


def _leaves(data: Mapping[str, Any], prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """(path, value) of every leaf, an empty map being a leaf, as the client's merge walks them."""
    if not data:
        return [(prefix, {})] if prefix else []
    found: list[tuple[tuple[str, ...], Any]] = []
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, dict):
            found.extend(_leaves(value, path))
        elif value is transforms.DELETE_FIELD:
            found.append((path, value))
        else:
            _check_plain(value)
            found.append((path, value))
    return found


def _put(fields: Any, parts: tuple[str, ...], value: Any) -> None:
    """Set `value` at `parts` inside a Document's (or a map's) fields, making the maps on the way."""
    for part in parts[:-1]:
        fields = fields[part].map_value.fields
    fields[parts[-1]].CopyFrom(encode_value(value))
