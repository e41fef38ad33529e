"""The request guard and the one classification of Google API errors: no 500, no unbounded wait."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from google.api_core import exceptions as gexc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paynow_service.adapters.google_errors import bounded
from paynow_service.domain.errors import StorageUnavailableError
from paynow_service.entrypoints.request_guard import RequestGuard, component_of


async def _boom(request: Request) -> Response:
    raise RuntimeError("a bug nobody classified")


async def _hang(request: Request) -> Response:
    await asyncio.sleep(60)
    return JSONResponse({})


async def _ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


def _client(deadline_s: float = 0.5) -> httpx.AsyncClient:
    routes = [
        Route(p, f, methods=["GET", "POST"]) for p, f in (("/boom", _boom), ("/hang", _hang), ("/ok", _ok))
    ]
    app = Starlette(routes=routes, middleware=[Middleware(RequestGuard, deadline_s=deadline_s)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_an_unexpected_error_is_a_503_not_a_500() -> None:
    async with _client() as client:
        answer = await client.post("/boom")
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert "bug" not in answer.text  # nothing of the inside leaks
    assert answer.headers["retry-after"] == "5"


async def test_a_wait_past_the_deadline_is_a_503_at_the_deadline() -> None:
    started = time.monotonic()
    async with _client(deadline_s=0.3) as client:
        answer = await client.get("/hang")
    assert answer.status_code == 503
    assert time.monotonic() - started < 2


async def test_answers_within_the_deadline_pass_untouched() -> None:
    async with _client() as client:
        answer = await client.get("/ok")
    assert (answer.status_code, answer.json()) == (200, {"ok": True})


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("/api/paynow/webhook", "paynow_webhook"),
        ("/api/tasks/paynow/process", "paynow_worker"),
        ("/paynow.points.v1.PointsService/GetBalance", "points_connect"),
        ("/readyz", "http"),
    ],
)
def test_the_log_line_names_the_routes_component(path: str, component: str) -> None:
    assert component_of(path) == component


@pytest.mark.parametrize(
    "error",
    [
        gexc.ServiceUnavailable("x"),
        gexc.DeadlineExceeded("x"),
        gexc.ResourceExhausted("x"),
        gexc.Unknown("x"),
        gexc.InternalServerError("x"),
        gexc.Aborted("x"),
        gexc.RetryError("x", cause=None),
        TimeoutError(),
        ConnectionResetError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_every_transient_google_error_is_storage_unavailable(error: BaseException) -> None:
    async def failing() -> None:
        raise error

    with pytest.raises(StorageUnavailableError):
        await bounded(failing(), 1, "a call")


async def test_an_answer_of_the_api_passes_through() -> None:
    async def exists() -> None:
        raise gexc.AlreadyExists("x")

    with pytest.raises(gexc.AlreadyExists):
        await bounded(exists(), 1, "a create")


async def test_a_call_that_never_answers_is_cut_at_its_bound() -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="no answer in time"):
        await bounded(asyncio.sleep(30), 0.2, "a read")
    assert time.monotonic() - started < 1
