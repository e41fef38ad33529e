"""`paynow-service loadtest ARGS`: hands ARGS over to the load tool, `paynow_loadtest.cli.main`.

The load tool is a distribution of its own (`paynow-loadtest`, in the repository's `loadtool/`):
it drives this service's processes from outside, so the service never imports it except here,
lazily. Where it is not installed, this command says how to install it, in one line.
"""

from __future__ import annotations

import argparse
import sys

from paynow_service.config import Settings

EXIT_USAGE = 2
PROG = "paynow-service loadtest --"
INSTALL_HINT = "install it from a checkout: `pip install -e loadtool` (or `make install`)"


def run(settings: Settings, args: argparse.Namespace) -> int:
    """The load tool's exit status with the remaining arguments (2 when it is not installed)."""
    rest = list(getattr(args, "rest", None) or [])
    if rest[:1] == ["--"]:
        rest = rest[1:]
    try:
        from paynow_loadtest.cli import main  # the one way in, lazy: the tool is optional
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] == "paynow_loadtest":
            print(f"paynow-service loadtest: the load tool is not installed; {INSTALL_HINT}", file=sys.stderr)
        else:
            print(f"paynow-service loadtest: the load tool needs {err.name}; {INSTALL_HINT}", file=sys.stderr)
        return EXIT_USAGE
    return main(rest, prog=PROG)
