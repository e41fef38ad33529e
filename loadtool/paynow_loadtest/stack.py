"""The stack under test: the one at --url, or one the tool starts on loopback and stops.

Started: both emulators (or the ones at --pubsub-host/--firestore-host), `infra apply` with the
fast test overrides (ack deadline 10 s, backoff 1-2 s), `paynow-service serve` in queue mode and
the pull worker at --worker-nice (or Pub/Sub pushing to serve), as child processes
(`processes.ServiceProcess`). An existing stack's settings come from the environment or the flags.
The processes' ids are kept for the report's memory and CPU (`Stack.pids`, `Stack.emulator_pids`:
an emulator the tool did not start is found by the loopback port it listens on).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from paynow_loadtest.processes import ServiceProcess, listening_pid, wait_port
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.adapters.pubsub_infra import InfraOverrides, PubSubInfra, desired_topology
from paynow_service.config import Settings
from paynow_service.domain.catalog import Catalog

SECRET = "pn-load-secret"  # noqa: S105 (the webhook secret of the stack the tool starts itself)
CATALOG = """
[products."411486491630370816"]   # points pack S
points = 500

[products."411486491630370820"]   # points pack L
points = 1200

[products."411486491630370818"]   # promo pack
points = 50
kind = "promo"

[subscriptions."411486491630370817"]   # monthly plan
points_per_cycle = 1000
"""
FAST = InfraOverrides(ack_deadline_s=10, min_backoff_s=1, max_backoff_s=2)


@dataclass
class Stack:
    url: str
    settings: Settings
    project: str
    secret: str
    catalog: Catalog
    worker_kind: str
    pids: dict[str, int] = field(default_factory=dict)  # "server", "worker"
    worker_logs: list[Path] = field(default_factory=list)
    workdir: Path | None = None
    started: list[str] = field(default_factory=list)  # what this tool started itself
    emulator_pids: dict[str, int] = field(default_factory=dict)  # "firestore", "pubsub"

    @property
    def service_pids(self) -> dict[str, int]:
        """The service's processes under the names the CPU table gives them (serve, worker)."""
        return {("serve" if name == "server" else name): pid for name, pid in self.pids.items()}


def emulator_pids(env: Mapping[str, str]) -> dict[str, int]:
    """The emulators of FIRESTORE_/PUBSUB_EMULATOR_HOST on loopback, by the port each listens on."""
    pids: dict[str, int] = {}
    for name, variable in (("firestore", "FIRESTORE_EMULATOR_HOST"), ("pubsub", "PUBSUB_EMULATOR_HOST")):
        host, _, port = env.get(variable, "").rpartition(":")
        if host in ("127.0.0.1", "localhost") and port.isdigit() and (pid := listening_pid(int(port))):
            pids[name] = pid
    return pids


@dataclass
class _Started:
    """What the tool started, to stop it again."""

    emulators: EmulatorStack | None = None
    processes: list[ServiceProcess] = field(default_factory=list)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.emulators is not None:
            self.emulators.stop()


@contextlib.contextmanager
def open_stack(args: argparse.Namespace) -> Iterator[Stack]:
    """The stack under test: the one at --url, or one this tool starts (and stops)."""
    if args.url:
        yield existing_stack(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="paynow-load-"))
    started = _Started()
    try:
        env = _emulator_env(args, workdir, started)
        yield _start_service(args, env, workdir, started)
    finally:
        started.stop()


def _emulator_env(args: argparse.Namespace, workdir: Path, started: _Started) -> dict[str, str]:
    """The emulators' environment (given or started); this tool's own clients use it too."""
    env: dict[str, str] = {}
    if args.pubsub_host or args.firestore_host:
        if not (args.pubsub_host and args.firestore_host):
            raise SystemExit("load: --pubsub-host and --firestore-host go together")
        env.update(
            PUBSUB_EMULATOR_HOST=args.pubsub_host,
            FIRESTORE_EMULATOR_HOST=args.firestore_host,
            GOOGLE_CLOUD_PROJECT=args.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "paynow-local",
        )
    else:
        print("starting the Pub/Sub and Firestore emulators ...", file=sys.stderr, flush=True)
        started.emulators = EmulatorStack.start(project=args.project or "paynow-load", log_dir=workdir)
        env.update(started.emulators.env())
    os.environ.update(env)  # this tool's own clients (floor, checks) use them too
    return env


def _service_env(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, str]:
    catalog_path = workdir / "catalog.toml"
    catalog_path.write_text(CATALOG)
    run = uuid.uuid4().hex[:8]
    return env | {
        "PUBSUB_TOPIC": f"load-{run}-events",
        "PUBSUB_DLQ_TOPIC": f"load-{run}-events-dlq",
        "PUBSUB_SUBSCRIPTION": f"load-{run}-events-sub",
        "PUBSUB_DLQ_SUBSCRIPTION": f"load-{run}-events-dlq-sub",
        "PAYNOW_WEBHOOK_SECRETS": SECRET,
        "EVENT_SIGNING_KEYS": os.environ.get("EVENT_SIGNING_KEYS") or f"load-{secrets.token_hex(24)}",
        "PRODUCT_CATALOG": str(catalog_path),
        "WEBHOOK_MODE": "queue",
        "PUSH_AUTH": "disabled",
        "POINTS_AUTH": "disabled",
        "LOG_LEVEL": args.log_level,
        # On the emulator a streaming pull that falls behind is redelivered what it holds: in a
        # default run 9,946 of 13,412 deliveries were repeats and the worker stalled (8,627 events
        # never processed); with plain Pull calls the same run drained in 22 s. GCP: streaming.
        "WORKER_PULL_MODE": os.environ.get("WORKER_PULL_MODE") or "unary",
        "HTTP_ROUTES": "webhook,push" if args.worker == "push" else "webhook",
    }


def _apply_topology(settings: Settings, worker: str, port: int) -> None:
    overrides = FAST
    if worker == "push":
        overrides = InfraOverrides(
            ack_deadline_s=10, min_backoff_s=1, max_backoff_s=2,
            push_endpoint=f"http://127.0.0.1:{port}/api/tasks/paynow/process",
        )  # fmt: skip
    infra = PubSubInfra(settings)
    try:
        infra.apply(desired_topology(settings, overrides))
    finally:
        infra.close()


def _start_service(args: argparse.Namespace, env: dict[str, str], workdir: Path, started: _Started) -> Stack:
    """`serve` in queue mode, the topology, and the pull worker (or push to serve)."""
    env = _service_env(args, env, workdir)
    settings = Settings.from_env(env)
    port = args.port or free_port()
    env["PORT"] = str(port)
    server = ServiceProcess("serve", env, workdir, port=port)
    started.processes.append(server)
    if not wait_port(port, 40):
        raise SystemExit(f"load: serve did not listen on {port}:\n{server.logs()[-2000:]}")
    _apply_topology(settings, args.worker, port)
    pids = {"server": server.process.pid}
    logs = [server.log_path]
    if args.worker == "pull":
        worker = ServiceProcess("worker", env, workdir, nice=args.worker_nice)
        started.processes.append(worker)
        pids["worker"] = worker.process.pid
        logs = [worker.log_path]
    emulators = started.emulators
    return Stack(
        url=f"http://127.0.0.1:{port}/api/paynow/webhook", settings=settings,
        project=settings.google_cloud_project, secret=SECRET, catalog=Catalog.from_toml(CATALOG),
        worker_kind=args.worker, pids=pids, worker_logs=logs, workdir=workdir,
        started=[*(["emulators"] if started.emulators else []), "serve",
                 *(["worker"] if args.worker == "pull" else [])],
        emulator_pids=({"firestore": emulators.firestore.pid, "pubsub": emulators.pubsub.pid}
                       if emulators is not None else emulator_pids(env)),
    )  # fmt: skip


def existing_stack(args: argparse.Namespace) -> Stack:
    """The stack at --url, its settings from the environment and the flags."""
    for flag, name in (
        ("pubsub_host", "PUBSUB_EMULATOR_HOST"), ("firestore_host", "FIRESTORE_EMULATOR_HOST"),
        ("project", "GOOGLE_CLOUD_PROJECT"), ("dlq_subscription", "PUBSUB_DLQ_SUBSCRIPTION"),
    ):  # fmt: skip
        if getattr(args, flag):
            os.environ[name] = getattr(args, flag)
    settings = Settings.from_env()
    secret = args.secret or next((s for s in settings.paynow_webhook_secrets if s), "")
    if not secret:
        raise SystemExit("load: --url needs --secret or PAYNOW_WEBHOOK_SECRETS")
    catalog_path = args.catalog or settings.product_catalog
    if not catalog_path:
        raise SystemExit("load: --url needs --catalog or PRODUCT_CATALOG (to know what each event is worth)")
    pids = {"server": args.server_pid or 0, "worker": args.worker_pid or 0}
    return Stack(
        url=args.url,
        settings=settings,
        project=settings.google_cloud_project,
        secret=secret,
        catalog=Catalog.from_toml(Path(catalog_path).read_text(encoding="utf-8")),
        worker_kind=args.worker,
        pids={k: v for k, v in pids.items() if v},
        worker_logs=[Path(p) for p in args.worker_log],
        emulator_pids=emulator_pids(os.environ),
    )
