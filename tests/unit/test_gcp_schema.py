"""The GCP-only infra extras: Pub/Sub schema and Firestore TTL, with fake admin clients."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.firestore_admin_v1 import Field
from google.pubsub_v1 import types

from paynow_service.adapters import gcp_schema
from paynow_service.adapters.gcp_schema import (
    ExtrasError,
    GcpClients,
    extras_apply,
    extras_plan,
    proto_definition,
)
from paynow_service.config import Settings
from paynow_service.gen.paynow.events.v1 import payment_event_pb2

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = ROOT / "proto/paynow/events/v1/payment_event.proto"
COPY = ROOT / "paynow_service/schema/payment_event.proto"
GCP = Settings(google_cloud_project="proj-test")
SCHEMA = "projects/proj-test/schemas/paynow-events-schema"
TOPIC = "projects/proj-test/topics/paynow-events"


class Untouchable:
    """A client that must not be used (emulator runs make no admin call)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected admin call {name}")


class FakeSchemas:
    def __init__(self) -> None:
        self.schemas: dict[str, types.Schema] = {}
        self.calls: list[str] = []

    def get_schema(self, request: dict[str, Any]) -> types.Schema:
        if request["name"] not in self.schemas:
            raise gexc.NotFound("no schema")
        return self.schemas[request["name"]]

    def validate_schema(self, parent: str, schema: types.Schema) -> None:
        self.calls.append("validate")

    def create_schema(self, parent: str, schema: types.Schema, schema_id: str) -> types.Schema:
        self.calls.append("create")
        self.schemas[f"{parent}/schemas/{schema_id}"] = schema
        return schema

    def commit_schema(self, name: str, schema: types.Schema) -> types.Schema:
        self.calls.append("commit")
        self.schemas[name] = schema
        return schema


class FakePublisher:
    def __init__(self, schemas: FakeSchemas) -> None:
        self.topics: dict[str, types.Topic] = {}
        self._schemas = schemas

    def get_topic(self, topic: str) -> types.Topic:
        if topic not in self.topics:
            raise gexc.NotFound("no topic")
        return self.topics[topic]

    def create_topic(self, request: types.Topic) -> types.Topic:
        # Pub/Sub refuses a topic whose schema does not exist yet.
        assert request.schema_settings.schema in self._schemas.schemas
        self.topics[request.name] = request
        return request


class FakeAdmin:
    def __init__(self) -> None:
        self.fields: dict[str, Field] = {}
        self.updates: list[dict[str, Any]] = []

    def get_field(self, name: str) -> Field:
        return self.fields.get(name, Field(name=name))

    def update_field(self, request: dict[str, Any]) -> object:
        self.updates.append(request)
        field = request["field"]
        self.fields[field.name] = Field(
            name=field.name, ttl_config=Field.TtlConfig(state=Field.TtlConfig.State.CREATING)
        )
        return object()  # the long-running operation, not awaited


@pytest.fixture
def fakes() -> tuple[GcpClients, FakeSchemas, FakePublisher, FakeAdmin]:
    schemas = FakeSchemas()
    publisher = FakePublisher(schemas)
    admin = FakeAdmin()
    return GcpClients(schemas, publisher, admin), schemas, publisher, admin


def test_packaged_proto_copy_is_identical_to_the_original() -> None:
    assert COPY.read_bytes() == ORIGINAL.read_bytes(), (
        "paynow_service/schema/payment_event.proto differs from proto/paynow/events/v1/payment_event.proto:"
        " copy the proto over it"
    )


def test_definition_comes_from_the_checkout_then_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proto_definition() == ORIGINAL.read_text(encoding="utf-8")
    monkeypatch.setattr(gcp_schema, "PROTO_PATH", Path("no/such/file.proto"))
    assert proto_definition() == COPY.read_text(encoding="utf-8")


def test_proto_is_a_valid_pubsub_schema_source() -> None:
    # Pub/Sub takes one self-contained file: no imports, one top-level message.
    descriptor = payment_event_pb2.DESCRIPTOR
    assert list(descriptor.dependencies) == []
    assert list(descriptor.message_types_by_name) == ["PaymentEvent"]
    assert f"{descriptor.package}.PaymentEvent" == gcp_schema.SCHEMA_MESSAGE
    assert "import " not in proto_definition()


def test_emulators_skip_both_parts_with_notes() -> None:
    settings = replace(GCP, pubsub_emulator_host="127.0.0.1:8085", firestore_emulator_host="127.0.0.1:8086")
    clients = GcpClients(Untouchable(), Untouchable(), Untouchable())
    for lines in (extras_plan(settings, clients), extras_apply(settings, clients)):
        assert lines == [
            f"note: {gcp_schema.PUBSUB_EMULATOR_NOTE}",
            f"note: {gcp_schema.FIRESTORE_EMULATOR_NOTE}",
        ]
        assert "501" in lines[0]


def test_one_emulator_skips_only_its_part(
    fakes: tuple[GcpClients, FakeSchemas, FakePublisher, FakeAdmin],
) -> None:
    _, _, _, admin = fakes
    settings = replace(GCP, pubsub_emulator_host="127.0.0.1:8085")
    only_ttl = GcpClients(Untouchable(), Untouchable(), admin)
    lines = extras_apply(settings, only_ttl)
    assert lines[0] == f"note: {gcp_schema.PUBSUB_EMULATOR_NOTE}"
    assert lines[1].startswith("updated firestore TTL webhookEvents.expiresAt")


def test_plan_then_apply_on_gcp(fakes: tuple[GcpClients, FakeSchemas, FakePublisher, FakeAdmin]) -> None:
    clients, schemas, publisher, admin = fakes
    plan = extras_plan(GCP, clients)
    assert [line.split()[:2] for line in plan] == [
        ["create", "schema"],
        ["create", "topic"],
        ["update", "firestore"],
    ]
    # plan is read-only
    assert not schemas.schemas
    assert not publisher.topics
    assert not admin.updates

    applied = extras_apply(GCP, clients)
    assert applied[0].startswith("created schema paynow-events-schema")
    assert applied[1].startswith("created topic paynow-events")
    assert schemas.schemas[SCHEMA].type_ == types.Schema.Type.PROTOCOL_BUFFER
    assert schemas.schemas[SCHEMA].definition == ORIGINAL.read_text(encoding="utf-8")
    topic = publisher.topics[TOPIC]
    assert topic.schema_settings.schema == SCHEMA
    assert topic.schema_settings.encoding == types.Encoding.BINARY
    assert topic.message_retention_duration.total_seconds() == 7 * 24 * 3600
    (update,) = admin.updates
    assert update["update_mask"] == {"paths": ["ttl_config"]}
    assert update["field"].name == (
        "projects/proj-test/databases/(default)/collectionGroups/webhookEvents/fields/expiresAt"
    )

    # Again: the schema and topic match; the TTL policy is still being created.
    again = extras_plan(GCP, clients)
    assert again == ["note: TTL policy on webhookEvents.expiresAt is still being created"]
    admin.fields[update["field"].name] = Field(
        name=update["field"].name, ttl_config=Field.TtlConfig(state=Field.TtlConfig.State.ACTIVE)
    )
    assert extras_apply(GCP, clients) == []


def test_changed_proto_commits_a_revision(
    fakes: tuple[GcpClients, FakeSchemas, FakePublisher, FakeAdmin],
) -> None:
    clients, schemas, _, _ = fakes
    extras_apply(GCP, clients)
    schemas.schemas[SCHEMA] = types.Schema(
        name=SCHEMA, type_=types.Schema.Type.PROTOCOL_BUFFER, definition="syntax = 'proto3';"
    )
    assert any(line.startswith("update  schema") for line in extras_plan(GCP, clients))
    assert any(line.startswith("updated schema") for line in extras_apply(GCP, clients))
    assert schemas.calls.count("commit") == 1
    assert schemas.schemas[SCHEMA].definition == proto_definition()


def test_existing_topic_without_schema_is_only_noted(
    fakes: tuple[GcpClients, FakeSchemas, FakePublisher, FakeAdmin],
) -> None:
    clients, _, publisher, _ = fakes
    publisher.topics[TOPIC] = types.Topic(name=TOPIC)
    lines = extras_apply(GCP, clients)
    note = next(line for line in lines if "without a schema" in line)
    assert note.startswith("note: ")
    assert "--message-encoding=binary" in note
    assert not publisher.topics[TOPIC].schema_settings.schema  # never attached to a live topic


def test_permission_denied_is_one_line_with_the_role(
    fakes: tuple[GcpClients, FakeSchemas, FakePublisher, FakeAdmin],
) -> None:
    clients, schemas, _, _ = fakes

    def denied(request: dict[str, Any]) -> None:
        raise gexc.PermissionDenied("caller lacks pubsub.schemas.get")

    schemas.get_schema = denied  # type: ignore[method-assign]
    with pytest.raises(ExtrasError, match=r"roles/pubsub\.editor") as info:
        extras_plan(GCP, clients)
    assert "\n" not in str(info.value)
