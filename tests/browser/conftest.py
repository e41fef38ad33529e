"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright), against a real
`serve` + `worker` on the emulators. Playwright's own browser download is never used: the browser
is the system's /usr/bin/chromium (`make browser` installs it); without it these tests are skipped
with one line saying so."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from paynow_loadtest.processes import ServiceProcess
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.config import Settings
from tests.support.processes import serve
from tests.support.stack import apply_topology, stack_env, write_catalog
from tests.support.tokens import CertsServer, TokenIssuer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = "operator@example.com"
AUDIENCE = "paynow-console-test"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


@dataclass
class ConsoleStack:
    env: dict[str, str]
    settings: Settings
    http: ServiceProcess
    worker: ServiceProcess
    catalog: Path
    issuer: TokenIssuer
    log_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}/console"

    @property
    def webhook(self) -> str:
        return f"http://127.0.0.1:{self.http.port}/api/paynow/webhook"

    @property
    def project(self) -> str:
        return self.settings.google_cloud_project

    def token(self, email: str = OPERATOR, **overrides: Any) -> str:
        return self.issuer.token(audience=AUDIENCE, email=email, **overrides)

    def restart_worker(self) -> None:
        self.worker.stop()
        self.worker = ServiceProcess("worker", self.env, self.log_dir)


@pytest.fixture(scope="module")
def console(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    tmp = tmp_path_factory.mktemp("console")
    issuer = TokenIssuer()
    with CertsServer(issuer) as certs:
        catalog = write_catalog(tmp)
        # The worker restarts in a test: unary pulls (see tests/e2e/test_dlq_e2e.py).
        env = stack_env(
            emulators.env(),
            catalog,
            WEBHOOK_MODE="queue",
            HTTP_ROUTES="webhook,console",
            WORKER_PULL_MODE="unary",
            CONSOLE_OPERATORS=f"{OPERATOR},second@example.com",
            CONSOLE_AUDIENCE=AUDIENCE,
            CONSOLE_CERTS_URL=certs.url,
        )
        settings = Settings.from_env(env)
        apply_topology(settings)
        http = serve(env, tmp)
        stack = ConsoleStack(env, settings, http, ServiceProcess("worker", env, tmp), catalog, issuer, tmp)
        try:
            yield stack
        finally:
            stack.http.stop()
            stack.worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} not installed (`make browser` installs Debian's chromium): browser tests skipped"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    return context.new_page()


@pytest.fixture
def page(browser: Any, console: ConsoleStack) -> Iterator[Any]:
    """A page signed in as the operator through the sign-in form."""
    page = new_page(browser)
    try:
        page.goto(f"{console.base}/signin")
        page.fill("#token", console.token())
        with page.expect_navigation():
            page.click("#signin")
        assert page.url == f"{console.base}/", page.content()
        yield page
    finally:
        page.context.close()


def shot(page: Any, name: str) -> None:
    """The page as the docs show it (docs/console.md)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
