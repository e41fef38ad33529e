"""`python bench/load.py ARGS`: the load tool, kept as this path for old habits and scripts.

The tool is the `paynow-loadtest` distribution in `loadtool/` (package `paynow_loadtest`,
installed by `make install`); run it as `paynow-service loadtest ARGS`. `--help` lists the options.
"""

import sys

try:
    from paynow_loadtest.cli import main
except ModuleNotFoundError as err:  # pragma: no cover - a checkout without `make install`
    if err.name != "paynow_loadtest":
        raise
    sys.exit("bench/load.py: the load tool is not installed: `make install` (or `pip install -e loadtool`)")

if __name__ == "__main__":
    sys.exit(main())
