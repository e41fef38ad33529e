"""The `paynow-service` command line (SPEC section 7).

Settings are read and validated before anything else, so a bad variable stops every
command with one line naming it. Each command is a thin shim over a module that does
the work; heavy imports happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from paynow_service.config import ConfigError, Settings
from paynow_service.logs import configure_logging, register_secrets

EXIT_USAGE = 2
# Processes that serve: their log lines are written off the request path (see logs.py).
LONG_RUNNING = frozenset({"serve", "grpc", "worker", "dev"})
# Processes that trace (OTEL_EXPORTER): `dev` runs them as children, each with its own tracer.
TRACED = frozenset({"serve", "grpc", "worker"})


def _entry(module: str, function: str = "run") -> Callable[..., int]:
    """Import a command's implementation only when that command runs (keeps start-up light)."""
    loaded = importlib.import_module(f"paynow_service.entrypoints.{module}")
    impl: Callable[..., int] = getattr(loaded, function)
    return impl


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("http_app")(settings)


def _cmd_grpc(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("grpc_server")(settings)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("pull_worker")(settings)


def _cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("dev")(settings, http_port=args.port, grpc_port=args.grpc_port)


def _cmd_infra(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("infra_cli")(settings, args)


def _cmd_send_test_webhook(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("send_test_webhook", "run_cli")(settings, args)


def _cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("dlq_cli")(settings, args)


def _cmd_sweep(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("sweep_cli")(settings, args)


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("migrate_cli")(settings, args)


def _cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("reconcile_cli")(settings, args)


def _cmd_loadtest(settings: Settings, args: argparse.Namespace) -> int:
    return _entry("loadtest_cli")(settings, args)


Add = Callable[[str, Callable[[Settings, argparse.Namespace], int], str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paynow-service",
        description="PayNow webhooks to wallet points. Configuration is read from the environment "
        "(see the README's table).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[Settings, argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    _add_servers(add)
    _add_infra(add)
    _add_operations(add)
    _add_tools(add)
    return parser


def _add_servers(add: Add) -> None:
    add("serve", _cmd_serve, "HTTP app on PORT (routes per HTTP_ROUTES)")
    add("grpc", _cmd_grpc, "gRPC PointsService, health and reflection on GRPC_PORT")
    add("worker", _cmd_worker, "streaming-pull worker on PUBSUB_SUBSCRIPTION")
    dev = add("dev", _cmd_dev, "the whole stack on this machine: emulators, infra, HTTP, gRPC, worker")
    dev.add_argument("--port", type=int, default=None, help="HTTP port (default: PORT)")
    dev.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: GRPC_PORT)")


def _add_infra(add: Add) -> None:
    infra = add("infra", _cmd_infra, "create or show the Pub/Sub topics and subscriptions")
    infra.add_argument("action", choices=["apply", "plan"])
    delivery = infra.add_mutually_exclusive_group()
    delivery.add_argument("--push-endpoint", help="make the main subscription push to this URL")
    delivery.add_argument(
        "--pull",
        action="store_true",
        help="make the main subscription pull (an existing push subscription is otherwise kept)",
    )
    infra.add_argument("--ack-deadline", type=int, help="override the 600 s ack deadline (tests)")
    infra.add_argument("--min-backoff", type=int, help="override the 10 s minimum retry backoff (tests)")
    infra.add_argument("--max-backoff", type=int, help="override the 600 s maximum retry backoff (tests)")


def _add_operations(add: Add) -> None:
    dlq = add("dlq", _cmd_dlq, "inspect and re-drive dead letters")
    dlq.add_argument("action", choices=["list", "replay", "purge"])
    dlq.add_argument("--json", action="store_true", help="list: one JSON object per dead letter")
    dlq.add_argument("--event-id", action="append", default=[], help="replay: this event (repeatable)")
    dlq.add_argument("--all", action="store_true", help="replay: every dead letter")
    dlq.add_argument("--dry-run", action="store_true", help="replay: show what would be re-published")
    dlq.add_argument("--yes", action="store_true", help="purge: do not ask")
    dlq.add_argument("--max", type=int, default=1000, help="at most this many messages (default 1000)")

    sweep = add("sweep", _cmd_sweep, "re-publish events stranded in `queued`")
    sweep.add_argument("--dry-run", action="store_true")
    sweep.add_argument("--limit", type=int, default=500)

    migrate = add("migrate", _cmd_migrate, "build paynowOrders for orders the app credited before cut-over")
    migrate.add_argument("what", choices=["orders"])
    migrate.add_argument(
        "--apply", action="store_true", help="write (default: a dry run that writes nothing)"
    )
    migrate.add_argument(
        "--since",
        metavar="DATE",
        help="only orders credited at or after DATE (YYYY-MM-DD, or ISO 8601 with an offset)",
    )
    migrate.add_argument("--page-size", type=int, default=500, help="ledger entries per read (default 500)")

    reconcile = add(
        "reconcile", _cmd_reconcile, "audit wallets, events and orders; --fix repairs balance drift"
    )
    reconcile.epilog = (
        "exit status: 0 no drift left, 1 drift found and not fixed, 2 usage, 3 Firestore failed"
    )
    reconcile.add_argument("--fix", action="store_true", help="repair paid drift (one entry) and promo drift")
    reconcile.add_argument("--report-id", help="the report's id (default: a new one)")
    reconcile.add_argument(
        "--out", default="reconcile-reports", help="directory of the JSON and Markdown reports"
    )
    reconcile.add_argument("--page-size", type=int, default=500, help="documents per read (default 500)")
    reconcile.add_argument(
        "--resume", action="store_true", help="carry on --report-id's run, else the latest"
    )
    reconcile.add_argument("--no-dlq", action="store_true", help="do not read the dead-letter subscription")


def _add_tools(add: Add) -> None:
    test = add("send-test-webhook", _cmd_send_test_webhook, "sign and send a realistic PayNow event to a URL")
    test.add_argument(
        "--url", default=None, help="webhook URL (default http://127.0.0.1:PORT/api/paynow/webhook)"
    )
    test.add_argument("--type", default="ON_ORDER_COMPLETED", dest="event_type", help="PayNow event type")
    test.add_argument("--uid", default="demo-user", help="our user id, sent as checkout metadata uid")
    test.add_argument("--product-id", default="411486491630370816", help="PayNow product id")
    test.add_argument("--order-id", default=None, help="order id (refunds and chargebacks refer to one)")
    test.add_argument("--quantity", type=int, default=1)

    load = add(
        "loadtest",
        _cmd_loadtest,
        "the load tool (paynow-loadtest, installed by make install); loadtest -- --help for its options",
    )
    load.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the load tool")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "loadtest":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "loadtest":  # everything after `loadtest` belongs to the load tool
        args.rest = [*extra, *args.rest]
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"paynow-service: configuration error: {err}", file=sys.stderr)
        return EXIT_USAGE
    register_secrets(settings.event_signing_keys)
    configure_logging(settings.log_level, background=args.command in LONG_RUNNING)
    if args.command in TRACED and settings.otel_exporter != "none":
        from paynow_service.tracing import setup

        setup(settings, args.command)
    try:
        return int(args.handler(settings, args))
    except ConfigError as err:
        print(f"paynow-service: configuration error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("paynow_service.entrypoints."):
            print(f"paynow-service {args.command}: not yet available", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
