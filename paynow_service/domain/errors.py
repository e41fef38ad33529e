"""Every exception this project raises on purpose: one family, one root.

Each boundary maps them with one table: the webhook (entrypoints/webhook.py) and the push
endpoint (entrypoints/push.py) to HTTP answers, PointsService (entrypoints/points_api.py)
to gRPC / Connect codes. Each class has a stable `reason` code used in logs, answers,
dead letters and `webhookEvents.failureReason`; `detail` is the one-line message.

`TerminalError`: retrying can never help (dead-letter it). `TransientError`: it might
succeed later (let the caller retry). Their `error_class` ("terminal" / "transient") is
the dead letters' attribute of that name; a log line names an exception's class in
`error_type` instead.

    PaynowServiceError
    ├── ConfigError                  (also a ValueError)
    ├── CatalogError                 (also a ValueError)
    ├── EmulatorError                (also a RuntimeError)
    ├── ExtrasError                  (also a RuntimeError)
    ├── AuthError
    │   ├── UnauthenticatedError
    │   └── PermissionDeniedError
    ├── WebhookRejectedError
    │   ├── MethodNotAllowedError
    │   ├── PayloadTooLargeError
    │   ├── SignatureError
    │   ├── ForeignStoreError
    │   └── MalformedWebhookError
    │       └── ClientDisconnectedError
    └── DomainError
        ├── TerminalError
        │   ├── UnknownProductError
        │   ├── UserNotFoundError
        │   ├── InvalidEventError
        │   ├── IncompatibleSchemaError
        │   ├── MalformedMessageError
        │   ├── LegacyMessageError
        │   ├── UnverifiedEventError
        │   └── PayloadConflictError
        ├── TransientError
        │   ├── OrderNotCreditedError
        │   ├── ContentionError
        │   ├── StorageUnavailableError
        │   ├── CertsUnavailableError
        │   └── PublishError
        ├── InvalidRequestError
        ├── LedgerConflictError
        └── EntryNotFoundError
"""

from __future__ import annotations


class PaynowServiceError(Exception):
    """Base of every exception this project raises on purpose."""

    reason = "error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or self.reason)
        if reason is not None:
            self.reason = reason

    @property
    def detail(self) -> str:
        return str(self)


# -- start-up and tooling ------------------------------------------------------------------


class ConfigError(PaynowServiceError, ValueError):
    """A setting has a value outside what it allows (one line, names the variable)."""

    reason = "config"


class CatalogError(PaynowServiceError, ValueError):
    """The catalog file is not valid TOML or a rule is malformed."""

    reason = "catalog"


class EmulatorError(PaynowServiceError, RuntimeError):
    """An emulator could not be found or did not become ready."""

    reason = "emulator"


class ExtrasError(PaynowServiceError, RuntimeError):
    """A schema or TTL call failed (one line saying what, and the permission it may need)."""

    reason = "extras"


# -- callers of the push endpoint and PointsService (Google ID tokens) ---------------------


class AuthError(PaynowServiceError):
    """The caller is not let in."""


class UnauthenticatedError(AuthError):
    """No valid Google ID token for this audience (answered 401 / UNAUTHENTICATED)."""

    reason = "unauthenticated"


class PermissionDeniedError(AuthError):
    """A valid token of an account that may not call, or with an unverified email (403)."""

    reason = "permission_denied"


# -- PayNow deliveries refused at the webhook's edge, before anything is recorded ----------


class WebhookRejectedError(PaynowServiceError):
    """The webhook refuses the delivery itself; `reason` is the answer's error code."""


class MethodNotAllowedError(WebhookRejectedError):
    """The request is not a POST."""

    reason = "method_not_allowed"


class PayloadTooLargeError(WebhookRejectedError):
    """The body is larger than PAYNOW_MAX_BODY_BYTES."""

    reason = "too_large"


class SignatureError(WebhookRejectedError):
    """The webhook's signature or timestamp did not verify (invalid_signature / invalid_timestamp)."""

    reason = "invalid_signature"


class ForeignStoreError(WebhookRejectedError):
    """The event belongs to another store than PAYNOW_STORE_ID."""

    reason = "foreign_store"


class MalformedWebhookError(WebhookRejectedError):
    """The delivery is not a PayNow envelope."""

    reason = "malformed"


class ClientDisconnectedError(MalformedWebhookError):
    """The client disconnected before the body was read."""


# -- the domain and service layers ----------------------------------------------------------


class DomainError(PaynowServiceError):
    """Base of every error the domain and service layers raise on purpose."""


class TerminalError(DomainError):
    """Retrying cannot help: the event goes to the dead-letter topic."""

    reason = "terminal"
    error_class = "terminal"


class TransientError(DomainError):
    """Might succeed later: the caller retries (503 / nack / ABORTED / UNAVAILABLE)."""

    reason = "transient"
    error_class = "transient"


class UnknownProductError(TerminalError):
    """No plugin maps the product to points."""

    reason = "unknown_product"


class UserNotFoundError(TerminalError):
    """The event carries no uid and its customer is not mapped to one."""

    reason = "user_not_found"


class InvalidEventError(TerminalError):
    """The event lacks a field the service needs, or a field has an impossible value."""

    reason = "invalid_event"


class IncompatibleSchemaError(TerminalError):
    """The message's schema_version is one this worker cannot read."""

    reason = "incompatible_schema"


class MalformedMessageError(TerminalError):
    """The Pub/Sub message cannot be decoded at all."""

    reason = "malformed_message"


class LegacyMessageError(TerminalError):
    """The message is one of the app's old publisher (JSON with a `version` field), not a PaymentEvent."""

    reason = "legacy_message"


class UnverifiedEventError(TerminalError):
    """The message has no `event_mac`, or one that no configured signing key verifies."""

    reason = "unverified_event"


class PayloadConflictError(TerminalError):
    """The event's payload hash differs from its record's: the same event id with another body."""

    reason = "payload_conflict"


class OrderNotCreditedError(TransientError):
    """A refund or chargeback arrived before its order was credited."""

    reason = "order_not_credited"


class ContentionError(TransientError):
    """The wallet stayed contended through every bounded retry."""

    reason = "contention_exhausted"


class StorageUnavailableError(TransientError):
    """Firestore (or Pub/Sub) was unavailable or past its deadline."""

    reason = "storage_unavailable"


class CertsUnavailableError(TransientError):
    """Google's signing certs could not be fetched and none are cached: try again later."""

    reason = "certs_unavailable"


class PublishError(TransientError):
    """The message could not be published within the bounded wait."""

    reason = "publish_failed"


class InvalidRequestError(DomainError):
    """A PointsService request is malformed (bad uid, amount, key ...)."""

    reason = "invalid_argument"


class LedgerConflictError(DomainError):
    """An idempotency key was reused with another uid or amount, or a reversal repeated differently."""

    reason = "conflict"


class EntryNotFoundError(DomainError):
    """The entry to reverse does not exist (for that user)."""

    reason = "not_found"
