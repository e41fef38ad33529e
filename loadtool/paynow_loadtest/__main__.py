"""`python -m paynow_loadtest ARGS`: the load tool."""

import sys

from paynow_loadtest.cli import main

sys.exit(main())
