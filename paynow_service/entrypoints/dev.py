"""`paynow-service dev`: the whole stack on this machine, on the local emulators.

Starts both emulators on free loopback ports, applies the Pub/Sub topology, then runs
`serve`, `grpc` and `worker` as child processes with the emulator environment. Prints
the URLs and a ready-to-paste command that sends a signed test webhook. Ctrl-C (or
SIGTERM) stops every process it started, emulators included.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import FrameType

from paynow_service import bootstrap
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.pubsub_infra import desired_topology
from paynow_service.config import ALL_ROUTES, Settings

DEV_SECRET = "pn-local-dev-secret"  # noqa: S105 (a local-only demo secret, printed on purpose)
DEV_PRODUCT = "411486491630370816"
DEV_PLAN = "411486491630370817"
DEV_CATALOG = f"""# Catalog written by `paynow-service dev` (PRODUCT_CATALOG was not set).
[products."{DEV_PRODUCT}"]
points = 500

[subscriptions."{DEV_PLAN}"]
points_per_cycle = 1000
"""

_SERVERS = (
    ("serve", "paynow_service.entrypoints.http_app"),
    ("grpc", "paynow_service.entrypoints.grpc_server"),
    ("worker", "paynow_service.entrypoints.pull_worker"),
)


class _Stop(Exception):
    """Raised by the signal handler to unwind and clean up."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _dev_env(stack: EmulatorStack, workdir: Path, http_port: int, grpc_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(stack.env())
    env.setdefault("WEBHOOK_MODE", "queue")
    env.setdefault("PAYNOW_WEBHOOK_SECRETS", DEV_SECRET)
    # The webhook signs the events it publishes and the worker verifies them: one random key
    # for this stack's life, shared by its processes through their environment (never printed).
    if not env.get("EVENT_SIGNING_KEYS", "").strip():
        env["EVENT_SIGNING_KEYS"] = secrets.token_hex(32)
    env.setdefault("PUSH_AUTH", "disabled")
    env.setdefault("POINTS_AUTH", "disabled")
    if not env.get("PRODUCT_CATALOG"):
        catalog = workdir / "catalog.toml"
        catalog.write_text(DEV_CATALOG)
        env["PRODUCT_CATALOG"] = str(catalog)
    env["PORT"] = str(http_port)
    env["GRPC_PORT"] = str(grpc_port)
    # `serve` defaults to the webhook alone (the public service's routes); the local stack
    # serves all of them, as its banner says.
    env["HTTP_ROUTES"] = ",".join(ALL_ROUTES)
    return env


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URL)
                return int(response.status) == 200
        except OSError:
            time.sleep(0.2)
    return False


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


def run(settings: Settings, *, http_port: int | None = None, grpc_port: int | None = None) -> int:
    http_port = http_port or settings.port
    grpc_port = grpc_port or settings.grpc_port
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    workdir = Path(tempfile.mkdtemp(prefix="paynow-dev-"))
    children: list[subprocess.Popen[bytes]] = []
    stack: EmulatorStack | None = None
    try:
        print("Starting the Pub/Sub and Firestore emulators ...", flush=True)
        stack = EmulatorStack.start(project=settings.google_cloud_project, log_dir=workdir)
        env = _dev_env(stack, workdir, http_port, grpc_port)
        child_settings = Settings.from_env(env)
        # The Google clients find the emulators through the process environment.
        os.environ.update(stack.env())
        infra = bootstrap.pubsub_infra(child_settings)
        try:
            infra.apply(desired_topology(child_settings))
        finally:
            infra.close()
        started = []
        for command, module in _SERVERS:
            if importlib.util.find_spec(module) is None:
                print(f"  {command}: not yet available, not started", flush=True)
                continue
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "paynow_service.entrypoints.cli", command],
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
            )
            started.append(command)
        if not _wait_http(f"http://127.0.0.1:{http_port}/healthz", timeout=60):
            print("The HTTP app did not come up; stopping.", file=sys.stderr)
            return 1
        _print_banner(env, http_port, grpc_port, started, workdir)
        while True:
            for child in children:
                if child.poll() is not None:
                    print(
                        f"A child process exited with {child.returncode}; stopping the stack.",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
    except _Stop:
        print("\nStopping ...", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_children(children)
        if stack is not None:
            stack.stop()
        print("Stopped: HTTP, gRPC, worker and both emulators.", flush=True)


def _print_banner(
    env: dict[str, str], http_port: int, grpc_port: int, started: list[str], workdir: Path
) -> None:
    base = f"http://127.0.0.1:{http_port}"
    send = (
        f"PAYNOW_WEBHOOK_SECRETS={shlex.quote(env['PAYNOW_WEBHOOK_SECRETS'].split(',')[0])} "
        f".venv/bin/paynow-service send-test-webhook --url {base}/api/paynow/webhook --uid demo-user"
    )
    balance = (
        f"curl -s -X POST {base}/paynow.points.v1.PointsService/GetBalance "
        "-H 'Content-Type: application/json' -d '{\"uid\":\"demo-user\"}'"
    )
    print(
        "\npaynow-service dev is running (Ctrl-C stops everything)\n"
        f"  mode           WEBHOOK_MODE={env['WEBHOOK_MODE']}\n"
        f"  processes      {', '.join(started)}\n"
        f"  webhook        POST {base}/api/paynow/webhook\n"
        f"  push endpoint  POST {base}/api/tasks/paynow/process\n"
        f"  Connect        {base}/paynow.points.v1.PointsService/*\n"
        f"  gRPC           127.0.0.1:{grpc_port}\n"
        f"  health         {base}/healthz  {base}/readyz  metrics {base}/metrics\n"
        f"  Pub/Sub        PUBSUB_EMULATOR_HOST={env['PUBSUB_EMULATOR_HOST']}\n"
        f"  Firestore      FIRESTORE_EMULATOR_HOST={env['FIRESTORE_EMULATOR_HOST']}\n"
        f"  catalog        {env['PRODUCT_CATALOG']}\n"
        f"  emulator logs  {workdir}\n\n"
        f"Send a signed test webhook (500 points to demo-user):\n  {send}\n"
        f"Then read the balance:\n  {balance}\n",
        flush=True,
    )
