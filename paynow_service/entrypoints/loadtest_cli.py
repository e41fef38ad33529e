"""`paynow-service loadtest ARGS`: runs the load tool of `bench/load.py` with ARGS.

The tool lives in the repository (it drives the service's own processes and reads the
test support code), not in the installed package, so this command works from a
checkout (an editable install, as `make` does) and says so clearly anywhere else.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from paynow_service.config import Settings

EXIT_USAGE = 2
_MODULE = "paynow_bench_load"


def find_load_tool(start: Path | None = None) -> Path | None:
    """bench/load.py of the checkout this package was imported from (or above `start`), if any."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        candidate = parent / "bench" / "load.py"
        if candidate.is_file() and (parent / "paynow_service").is_dir():
            return candidate
    return None


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Load bench/load.py and run its main with the remaining arguments; its exit status is ours."""
    rest = list(getattr(args, "rest", None) or [])
    if rest[:1] == ["--"]:
        rest = rest[1:]
    path = find_load_tool()
    if path is None:
        print(
            "paynow-service loadtest: bench/load.py was not found next to this installation; "
            "the load tool runs from a checkout of the repository (pip install -e . there, "
            "or run `python bench/load.py` from its root)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    root = str(path.parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)  # the tool imports tests.support from the checkout
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    if spec is None or spec.loader is None:
        print(f"paynow-service loadtest: cannot load {path}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    try:
        return int(module.main(rest, prog="paynow-service loadtest --"))
    except SystemExit as exit_:  # argparse (--help, a bad flag) and the tool's own usage errors
        code = exit_.code
        if isinstance(code, int):
            return code
        if code:
            print(code, file=sys.stderr)
            return EXIT_USAGE
        return 0
