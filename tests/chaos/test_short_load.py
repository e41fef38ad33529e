"""A short run of the load tool (`paynow_loadtest`, as `make test` can afford: a few hundred
events and the app's spends among them) on the session emulators, with its own serve and
pull worker: zero lost, zero doubled, the DLQ exact, every spend checked and no wallet
broken. Also: `paynow-service loadtest` reaches the same tool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paynow_service.adapters.emulators import EmulatorStack
from tests.support.processes import run_cli

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(200)]


def test_short_load_loses_nothing_doubles_nothing_and_dead_letters_exactly(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    args = [
        sys.executable, str(ROOT / "bench" / "load.py"),
        "--rate", "30", "--duration", "9", "--floor-duration", "2", "--warmup", "2", "--seed", "7",
        "--pubsub-host", emulators.pubsub.host_port, "--firestore-host", emulators.firestore.host_port,
        "--project", emulators.firestore.project, "--drain-timeout", "60", "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    reports = sorted(out.glob("load-*.json"))
    assert len(reports) == 1
    assert reports[0].with_suffix(".md").is_file()
    assert reports[0].with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(reports[0].read_text())
    inv = result["invariants"]
    assert inv["ok"], inv["summary"]
    assert result["drain"]["drained"], inv["summary"]
    assert (inv["lost"], inv["doubled"], inv["dlq_duplicates"]) == (0, 0, 0)
    assert inv["dlq_received"] == inv["dlq_expected"]
    assert inv["dlq_expected"] >= 3
    assert inv["accepted"] >= 230
    assert result["service"]["deliveries"] >= 260
    labels = result["traffic"]["deliveries_by_label"]
    assert labels.get("duplicate", 0) >= 10
    assert labels.get("refund", 0) >= 3
    assert result["floor"]["deliveries"] >= 50
    assert result["answer_p95_over_floor"] > 0
    assert min(result["rss"]["server"]["peak_mib"], result["rss"]["worker"]["peak_mib"]) > 0
    assert min(result["processing_ms"]["count"], result["lag_ms"]["count"]) > 0
    assert "invariants: OK" in run.stdout
    # The app's spends, beside the traffic in both kinds of turns, and every one checked.
    spends = result["spends"]
    assert spends["inconsistent"] == 0, spends
    assert inv["spends"] >= 10, spends
    assert "spends_refused" in inv
    checks = inv["checks"]
    assert checks["spends_exact"]["checked"] >= 10
    assert all(
        checks[name]["ok"] for name in ("spends_exact", "wallet_in_app_model", "wallet_equals_expected")
    )
    assert (
        spends["checked"]["attempted"] == inv["spends"] + inv["spends_refused"] == spends["run"]["attempted"]
    )
    settled = spends["run"]["unknown_reread_written"] + spends["run"]["unknown_reread_unwritten"]
    assert settled == spends["run"]["unknown"] + spends["run"]["inconsistent"]  # every one re-read
    assert min(spends["service"]["attempted"], spends["floor"]["attempted"]) > 0, spends
    assert spends["service"]["p95_ms"] > 0
    assert "INCONSISTENT_PROMO_BALANCE" in run.stdout


def test_loadtest_command_runs_the_load_tool() -> None:
    result = run_cli("loadtest", "--", "--help", env={}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--find-max" in result.stdout
    assert "--spend-share" in result.stdout
    assert "paynow-service loadtest" in result.stdout
    bad = run_cli("loadtest", "--", "--rate", "0", env={}, timeout=60)
    assert bad.returncode == 2
    assert "--rate and --duration must be positive" in bad.stderr
