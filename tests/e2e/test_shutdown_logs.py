"""A stopped process has written every log line: serve and worker log from a background thread,
and uvicorn ends the process by re-raising SIGTERM, which skips exit handlers."""

from __future__ import annotations

import json
from pathlib import Path

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.config import Settings
from paynow_service.sample_webhooks import build_event
from tests.support.processes import serve
from tests.support.stack import PRODUCT, apply_topology, stack_env, unique, wait_for, write_catalog

SECRET = "pn-test-secret-one"


def messages(process: ServiceProcess) -> list[str]:
    return [json.loads(line)["message"] for line in process.logs().splitlines() if line.startswith("{")]


def test_serve_and_worker_write_every_line_before_they_exit(emulators: EmulatorStack, tmp_path: Path) -> None:
    env = stack_env(emulators.env(), write_catalog(tmp_path), WEBHOOK_MODE="queue", HTTP_ROUTES="webhook")
    apply_topology(Settings.from_env(env))
    server = serve(env, tmp_path)
    worker = ServiceProcess("worker", env, tmp_path)
    try:
        body = json.dumps(build_event("ON_ORDER_COMPLETED", uid=unique("u"), product_id=PRODUCT)).encode()
        answer = post(f"http://127.0.0.1:{server.port}/api/paynow/webhook", body, SECRET)
        assert answer.status_code == 200, answer.text
        # The worker's lines go through its background writer too: once this one is on disk, stop it.
        assert wait_for(lambda: "Worker processed event successfully" in messages(worker), timeout=60)
    finally:
        server_code, worker_code = server.stop(), worker.stop()
    served = messages(server)
    assert "Webhook processed successfully" in served
    assert "HTTP app stopped" in served  # logged during the graceful shutdown, after SIGTERM
    assert served[-1].startswith("Finished server process")  # uvicorn's last line
    assert messages(worker)[-1] == "Worker stopped"
    assert server_code == -15  # uvicorn re-raised SIGTERM: it ended by the signal, not by a SIGKILL
    assert worker_code == 0
