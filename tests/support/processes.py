"""The tests' shortcuts over the service's processes (`paynow_loadtest.processes` runs them):
a `serve` on a free port, waited for, and one `paynow-service COMMAND` run to its end."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from paynow_loadtest.processes import CLI, ServiceProcess
from paynow_service.adapters.emulators import free_port


def serve(env: Mapping[str, str], log_dir: Path, **extra: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess("serve", {**env, "PORT": str(port), **extra}, log_dir, port=port).wait_ready()


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
