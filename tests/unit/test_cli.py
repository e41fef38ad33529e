"""The console script: one-line configuration errors before anything else."""

from __future__ import annotations

import os
import subprocess
import sys

from paynow_service.entrypoints.cli import build_parser

SPEC_COMMANDS = {"serve", "grpc", "worker", "dev", "infra", "dlq", "sweep", "send-test-webhook", "loadtest"}


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paynow_service.entrypoints.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_webhook_mode_stops_with_one_line() -> None:
    result = _run("serve", env={"WEBHOOK_MODE": "fast"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "WEBHOOK_MODE" in lines[0]
    assert "sync" in lines[0]
    assert "queue" in lines[0]
    assert result.stdout == ""


def test_every_spec_command_exists() -> None:
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) >= SPEC_COMMANDS
