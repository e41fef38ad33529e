"""One exception family, and one table per boundary that maps it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import pytest

import paynow_service
from paynow_service.domain import errors
from paynow_service.domain.errors import (
    ClientDisconnectedError,
    MalformedWebhookError,
    PaynowServiceError,
    WebhookRejectedError,
)
from paynow_service.entrypoints import push, webhook
from paynow_service.service.ingest import NOT_DURABLE, IngestOutcome


def _subclasses(base: type[BaseException]) -> list[type[BaseException]]:
    found = []
    for sub in base.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(paynow_service.__path__, "paynow_service."):
        if ".gen" in info.name:
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("module_name", _modules())
def test_every_public_exception_of_the_project_derives_from_the_root(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name, value in vars(module).items():
        # (Classes made at run time, such as protobuf message classes, may have no __module__.)
        ours = inspect.isclass(value) and (value.__module__ or "").startswith("paynow_service.")
        if ours and issubclass(value, BaseException) and not name.startswith("_"):
            assert issubclass(value, PaynowServiceError), f"{module_name}.{name}"


def test_every_exception_is_declared_in_errors_with_a_one_line_docstring() -> None:
    for cls in _subclasses(PaynowServiceError):
        assert cls.__module__ == errors.__name__, cls
        assert cls.__doc__, cls
        assert "\n" not in cls.__doc__.strip(), cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} is missing from the tree"


def test_old_homes_still_export_the_same_classes() -> None:
    from paynow_service.adapters import emulators, gcp_schema, oidc, pubsub_publisher
    from paynow_service.config import ConfigError
    from paynow_service.domain import catalog, paynow, signature

    assert ConfigError is errors.ConfigError
    assert catalog.CatalogError is errors.CatalogError
    assert emulators.EmulatorError is errors.EmulatorError
    assert gcp_schema.ExtrasError is errors.ExtrasError
    assert pubsub_publisher.PublishError is errors.PublishError
    assert oidc.UnauthenticatedError is errors.UnauthenticatedError
    assert oidc.PermissionDeniedError is errors.PermissionDeniedError
    assert oidc.CertsUnavailableError is errors.CertsUnavailableError
    assert signature.SignatureError is errors.SignatureError
    assert paynow.MalformedWebhookError is errors.MalformedWebhookError


def test_value_and_runtime_errors_keep_their_builtin_base() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.CatalogError, ValueError)
    assert issubclass(errors.EmulatorError, RuntimeError)
    assert issubclass(errors.ExtrasError, RuntimeError)


@pytest.mark.parametrize("error_type", [WebhookRejectedError, *_subclasses(WebhookRejectedError)])
def test_every_webhook_rejection_has_its_row(error_type: type[WebhookRejectedError]) -> None:
    rows = [row for row_type, row in webhook.REJECTIONS if issubclass(error_type, row_type)]
    if error_type is WebhookRejectedError:
        assert rows == []  # the base itself is never raised
        return
    assert rows, error_type
    assert 400 <= rows[0].status < 500


@pytest.mark.parametrize(
    ("error", "status", "code", "logged"),
    [
        (errors.MethodNotAllowedError("use POST"), 405, "method_not_allowed", False),
        (errors.PayloadTooLargeError("body exceeds 1 bytes"), 413, "too_large", True),
        (ClientDisconnectedError("gone"), 400, "malformed", False),
        (MalformedWebhookError("body is not JSON"), 400, "malformed", True),
        (errors.SignatureError("x", reason="invalid_timestamp"), 401, "invalid_timestamp", True),
        (errors.SignatureError("x"), 401, "invalid_signature", True),
        (errors.ForeignStoreError("x"), 401, "foreign_store", True),
    ],
)
def test_webhook_rejections_keep_their_answers(
    error: WebhookRejectedError, status: int, code: str, logged: bool
) -> None:
    rejection = webhook.rejection_for(error)
    assert (rejection.status, error.reason, rejection.logged) == (status, code, logged)


def test_every_ingest_outcome_has_an_http_status() -> None:
    outcomes = set(typing.get_args(IngestOutcome))
    assert set(webhook.STATUS_BY_OUTCOME) == outcomes
    assert {o for o, status in webhook.STATUS_BY_OUTCOME.items() if status != 200} == NOT_DURABLE
    assert {webhook.STATUS_BY_OUTCOME[o] for o in NOT_DURABLE} == {503}


def test_push_refusals_cover_what_the_token_verifier_raises() -> None:
    answers = {error_type: (r.status, r.error) for error_type, r in push.REFUSALS}
    assert answers == {
        errors.UnauthenticatedError: (401, "unauthenticated"),
        errors.PermissionDeniedError: (403, "permission_denied"),
        errors.CertsUnavailableError: (503, "retry"),
    }
