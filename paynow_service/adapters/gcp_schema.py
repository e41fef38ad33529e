"""The GCP-only part of `infra plan|apply`: the topic's protobuf schema and the TTL policy.

- Pub/Sub schema: `paynow.events.v1.PaymentEvent` (PROTOCOL_BUFFER) registered from the
  text of proto/paynow/events/v1/payment_event.proto (a checkout), else from the copy
  shipped as package data (an installed wheel, the container image). A changed proto
  becomes a new schema revision. The schema is attached to PUBSUB_TOPIC (encoding
  BINARY) only when this module creates that topic: attaching one to a live topic
  makes Pub/Sub refuse every publish that does not parse, so that is left to a person.
- Firestore TTL policy on `webhookEvents.expiresAt` (deletes events WEBHOOK_EVENT_TTL_DAYS
  after receipt).

Neither exists on the emulators (Pub/Sub answers 501 to schema calls; the Firestore
emulator has no TTL): each part is skipped with a note when its emulator host is set.
`extras_apply` must run before `PubSubInfra.apply`, so that a new topic is created with
its schema. Both functions return human-readable lines; failures raise `ExtrasError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.protobuf import duration_pb2

from paynow_service.adapters.firestore_names import EVENTS
from paynow_service.adapters.pubsub_topology import desired_topology
from paynow_service.config import Settings
from paynow_service.domain.errors import ExtrasError as ExtrasError

SCHEMA_MESSAGE = "paynow.events.v1.PaymentEvent"
PROTO_PATH = Path("proto/paynow/events/v1/payment_event.proto")
PACKAGE_COPY = ("paynow_service.schema", "payment_event.proto")
TTL_COLLECTION_GROUP = EVENTS
TTL_FIELD = "expiresAt"

PUBSUB_EMULATOR_NOTE = (
    "emulator: Pub/Sub protobuf schemas are not implemented (501): schema skipped, topics have none"
    " (on GCP `infra apply` registers it)"
)
FIRESTORE_EMULATOR_NOTE = (
    f"emulator: Firestore TTL policies do not exist there: {TTL_COLLECTION_GROUP}.{TTL_FIELD} is written"
    " but nothing deletes expired events (on GCP `infra apply` enables the policy)"
)


def proto_definition() -> str:
    """The PaymentEvent .proto text: the checkout's file, else the packaged copy."""
    checkout = Path(__file__).resolve().parents[2] / PROTO_PATH
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    package, name = PACKAGE_COPY
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def schema_id(settings: Settings) -> str:
    return f"{settings.pubsub_topic}-schema"


def ttl_field_path(settings: Settings) -> str:
    return (
        f"projects/{settings.google_cloud_project}/databases/(default)"
        f"/collectionGroups/{TTL_COLLECTION_GROUP}/fields/{TTL_FIELD}"
    )


class GcpClients:
    """The admin clients, created on first use (tests pass fakes)."""

    def __init__(self, schemas: Any = None, publisher: Any = None, firestore_admin: Any = None) -> None:
        self._schemas, self._publisher, self._admin = schemas, publisher, firestore_admin

    @property
    def schemas(self) -> Any:
        if self._schemas is None:
            from google.pubsub_v1 import SchemaServiceClient

            self._schemas = SchemaServiceClient()
        return self._schemas

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            from google.pubsub_v1 import PublisherClient

            self._publisher = PublisherClient()
        return self._publisher

    @property
    def firestore_admin(self) -> Any:
        if self._admin is None:
            from google.cloud.firestore_admin_v1 import FirestoreAdminClient

            self._admin = FirestoreAdminClient()
        return self._admin


@dataclass(frozen=True)
class _Step:
    action: str  # "create", "update" or "note"
    resource: str
    detail: str
    run: Callable[[], str] | None = None  # returns the line to print once done

    def planned(self) -> str:
        return (
            f"note: {self.detail}"
            if self.action == "note"
            else f"{self.action:7} {self.resource}: {self.detail}"
        )


def _call(
    what: str, hint: str, fn: Callable[[], Any], tolerate: tuple[type[Exception], ...] = (gexc.NotFound,)
) -> Any:
    """Run one admin call; `tolerate`d errors come back as None, any other failure as ExtrasError."""
    try:
        return fn()
    except tolerate:
        return None
    except auth_exc.DefaultCredentialsError as err:
        raise ExtrasError(
            f"{what}: no Google credentials ({err}); run `gcloud auth application-default login`"
        ) from None
    except gexc.GoogleAPIError as err:
        extra = f" (the caller needs {hint})" if isinstance(err, gexc.PermissionDenied) else ""
        raise ExtrasError(f"{what}: {type(err).__name__}: {str(err)[:300]}{extra}") from None


def _schema_steps(settings: Settings, clients: GcpClients) -> list[_Step]:
    from google.pubsub_v1 import types

    project = settings.google_cloud_project
    name = f"projects/{project}/schemas/{schema_id(settings)}"
    wanted = types.Schema(name=name, type_=types.Schema.Type.PROTOCOL_BUFFER, definition=proto_definition())
    hint = "roles/pubsub.editor"
    steps: list[_Step] = []
    existing = _call(
        f"get schema {name}",
        hint,
        lambda: clients.schemas.get_schema(request={"name": name, "view": types.SchemaView.FULL}),
    )
    if existing is None or existing.definition != wanted.definition:
        # Refuse a definition Pub/Sub would not accept before anything changes.
        _call(
            "validate schema",
            hint,
            lambda: clients.schemas.validate_schema(parent=f"projects/{project}", schema=wanted),
        )
    resource = f"schema {schema_id(settings)}"
    if existing is None:

        def create() -> str:
            _call(
                f"create {resource}",
                hint,
                lambda: clients.schemas.create_schema(
                    parent=f"projects/{project}", schema=wanted, schema_id=schema_id(settings)
                ),
                tolerate=(gexc.AlreadyExists,),
            )
            return f"created {resource}: PROTOCOL_BUFFER {SCHEMA_MESSAGE}"

        steps.append(
            _Step("create", resource, f"PROTOCOL_BUFFER {SCHEMA_MESSAGE} from {PROTO_PATH.name}", create)
        )
    elif existing.definition != wanted.definition:

        def commit() -> str:
            _call(f"commit {resource}", hint, lambda: clients.schemas.commit_schema(name=name, schema=wanted))
            return f"updated {resource}: new revision committed"

        steps.append(_Step("update", resource, f"{PROTO_PATH.name} changed: commit a new revision", commit))
    steps.extend(_topic_steps(settings, clients, name))
    return steps


def _topic_steps(settings: Settings, clients: GcpClients, schema_name: str) -> list[_Step]:
    from google.pubsub_v1 import types

    topic_path = settings.topic_path(settings.pubsub_topic)
    hint = "roles/pubsub.editor"
    topic = _call(f"get topic {topic_path}", hint, lambda: clients.publisher.get_topic(topic=topic_path))
    resource = f"topic {settings.pubsub_topic}"
    if topic is None:
        retention_s = next(
            t.retention_s for t in desired_topology(settings).topics if t.topic_id == settings.pubsub_topic
        )
        wanted = types.Topic(
            name=topic_path,
            message_retention_duration=duration_pb2.Duration(seconds=retention_s),
            schema_settings=types.SchemaSettings(schema=schema_name, encoding=types.Encoding.BINARY),
        )

        def create() -> str:
            created = _call(
                f"create {resource}",
                hint,
                lambda: clients.publisher.create_topic(request=wanted),
                tolerate=(gexc.AlreadyExists,),
            )
            if created is None:
                return f"exists  {resource}: created concurrently by someone else; run `infra plan` again"
            return f"created {resource}: schema {schema_id(settings)}, encoding BINARY"

        detail = f"with schema {schema_id(settings)}, encoding BINARY (a schema is attached only at creation)"
        return [_Step("create", resource, detail, create)]
    attached = topic.schema_settings.schema
    if not attached:
        return [
            _Step(
                "note",
                resource,
                f"topic {settings.pubsub_topic} exists without a schema: this tool attaches one only when it"
                " creates the topic. Attaching it now makes Pub/Sub refuse any publish that is not a binary"
                " PaymentEvent (a `dlq replay` of an undecodable dead letter included); to do it, check every"
                f" publisher, then `gcloud pubsub topics update {settings.pubsub_topic}"
                f" --schema={schema_id(settings)} --message-encoding=binary` (docs/runbook.md)",
            )
        ]
    if attached != schema_name or topic.schema_settings.encoding != types.Encoding.BINARY:
        return [
            _Step(
                "note",
                resource,
                f"topic {settings.pubsub_topic} validates against {attached}"
                f" (encoding {types.Encoding(topic.schema_settings.encoding).name}), not"
                f" {schema_name} BINARY: left as it is",
            )
        ]
    return []


def _ttl_steps(settings: Settings, clients: GcpClients) -> list[_Step]:
    from google.cloud.firestore_admin_v1 import Field

    path = ttl_field_path(settings)
    hint = "roles/datastore.indexAdmin"
    resource = f"firestore TTL {TTL_COLLECTION_GROUP}.{TTL_FIELD}"
    field = _call(f"get field {path}", hint, lambda: clients.firestore_admin.get_field(name=path))
    state = field.ttl_config.state if field is not None and "ttl_config" in field else None
    if state == Field.TtlConfig.State.ACTIVE:
        return []
    if state == Field.TtlConfig.State.CREATING:
        return [
            _Step(
                "note", resource, f"TTL policy on {TTL_COLLECTION_GROUP}.{TTL_FIELD} is still being created"
            )
        ]

    def enable() -> str:
        request = {
            "field": Field(name=path, ttl_config=Field.TtlConfig()),
            "update_mask": {"paths": ["ttl_config"]},
        }
        # A long-running operation (minutes): not awaited; `infra plan` shows when it is active.
        _call(f"enable {resource}", hint, lambda: clients.firestore_admin.update_field(request=request))
        return (
            f"updated {resource}: TTL policy requested (takes a few minutes; check with `gcloud firestore"
            f" fields ttls list --collection-group={TTL_COLLECTION_GROUP}`)"
        )

    why = "needs repair: re-enable" if state == Field.TtlConfig.State.NEEDS_REPAIR else "enable"
    return [_Step("update", resource, f"{why} (events deleted WEBHOOK_EVENT_TTL_DAYS after receipt)", enable)]


def _steps(settings: Settings, clients: GcpClients) -> list[_Step]:
    steps: list[_Step] = []
    if settings.pubsub_emulator_host:
        steps.append(_Step("note", "schema", PUBSUB_EMULATOR_NOTE))
    else:
        steps.extend(_schema_steps(settings, clients))
    if settings.firestore_emulator_host:
        steps.append(_Step("note", "ttl", FIRESTORE_EMULATOR_NOTE))
    else:
        steps.extend(_ttl_steps(settings, clients))
    return steps


def extras_plan(settings: Settings, clients: GcpClients | None = None) -> list[str]:
    """What `extras_apply` would change (and notes); read-only."""
    return [step.planned() for step in _steps(settings, clients or GcpClients())]


def extras_apply(settings: Settings, clients: GcpClients | None = None) -> list[str]:
    """Register or update the schema, create the topic with it, enable the TTL policy.

    Call before `PubSubInfra.apply` so a missing topic is created with its schema.
    """
    lines: list[str] = []
    for step in _steps(settings, clients or GcpClients()):
        lines.append(step.run() if step.run is not None else step.planned())
    return lines
