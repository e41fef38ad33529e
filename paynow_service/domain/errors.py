"""The domain's error family. Entry points map these to HTTP / gRPC codes in one table each.

`TerminalError`: retrying can never help (dead-letter it). `TransientError`: it might
succeed later (let the caller retry). Each has a stable `reason` code used in logs,
dead letters and `webhookEvents.failureReason`.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the service layer raises on purpose."""

    reason = "error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or self.reason)
        if reason is not None:
            self.reason = reason

    @property
    def detail(self) -> str:
        return str(self)


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


class OrderNotCreditedError(TransientError):
    """A refund or chargeback arrived before its order was credited."""

    reason = "order_not_credited"


class ContentionError(TransientError):
    """The wallet stayed contended through every bounded retry."""

    reason = "contention_exhausted"


class StorageUnavailableError(TransientError):
    """Firestore (or Pub/Sub) was unavailable or past its deadline."""

    reason = "storage_unavailable"


class InvalidRequestError(DomainError):
    """A PointsService request is malformed (bad uid, amount, key ...)."""

    reason = "invalid_argument"


class LedgerConflictError(DomainError):
    """An idempotency key was reused with another uid or amount, or a reversal repeated differently."""

    reason = "conflict"


class EntryNotFoundError(DomainError):
    """The entry to reverse does not exist (for that user)."""

    reason = "not_found"
