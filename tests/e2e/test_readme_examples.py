"""Every `buf curl` and `curl` command of README.md, run against a real stack on the emulators.

The README's commands are written for `make run` (HTTP on 8080, gRPC on 50051, auth off).
This test starts `paynow-service serve` (webhook, push, points and metrics routes) and
`paynow-service grpc` on free loopback ports, rewrites the ports and the example user to
fresh ones, runs each command as written (`buf` from this virtualenv, `curl` from the
system) in README order, and checks its exit status and its answer. A command that no check
below recognises fails the test: a new example is either covered here or not published.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from paynow_loadtest.processes import ServiceProcess
from paynow_service.adapters.emulators import EmulatorStack, free_port
from tests.support.stack import stack_env, write_catalog

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BUF = Path(sys.executable).parent / "buf"
CURL = shutil.which("curl")
HTTP_PORT, GRPC_PORT = 8080, 50051  # what the README's commands use (`make run`)
POINTS = "paynow.points.v1.PointsService"
REFLECTION = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")


def readme_commands(text: str) -> list[str]:
    """Each `buf curl ...` / `curl ...` command of the README's fenced blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(("buf curl ", "curl ")):
                commands.append(line)
    return commands


def _json(out: str) -> dict[str, Any]:
    document = json.loads(out)
    assert isinstance(document, dict), out
    return document


def _lists_everything(out: str) -> None:
    services = set(out.split())
    assert {POINTS, "grpc.health.v1.Health", *REFLECTION} <= services, out


def _lists_methods(out: str) -> None:
    assert {f"{POINTS}/{m}" for m in ("CreditPoints", "ReversePoints", "GetBalance", "ListLedger")} <= set(
        out.split()
    ), out


def _serving(out: str) -> None:
    assert _json(out) == {"status": "SERVING"}


def _credited(out: str) -> None:
    answer = _json(out)
    assert answer["entry"]["amount"] in ("250", "100"), answer
    assert "balance" in answer


def _balance(out: str) -> None:
    answer = _json(out)
    assert answer["paidBalance"] == "250", answer  # the README's gRPC CreditPoints ran before


def _ledger(out: str) -> None:
    entries = _json(out)["entries"]
    assert any(entry.get("amount") == "250" for entry in entries), entries


def _healthy(out: str) -> None:
    assert _json(out) == {"status": "ok"}


def _ready(out: str) -> None:
    assert _json(out)["ready"] is True, out


def _method_not_allowed(out: str) -> None:
    assert out.strip() == "405"


def _prometheus(out: str) -> None:
    assert "# TYPE paynow_webhook_latency_seconds histogram" in out, out[:2000]


@dataclass(frozen=True)
class Check:
    """Which README commands it recognises (every pattern found in the command) and what they must answer."""

    name: str
    patterns: tuple[str, ...]
    verify: Callable[[str], None]
    required: bool = True  # False: an example of another README section, run when it is there

    def matches(self, command: str) -> bool:
        return all(re.search(pattern, command) for pattern in self.patterns)


GRPC = r"^buf curl --protocol grpc --http2-prior-knowledge "
CONNECT_BUF = r"^buf curl --schema proto "
CHECKS = (
    Check(
        "reflection v1 (default) lists services",
        (GRPC, r"--list-services", r"^(?!.*--reflect-protocol)"),
        _lists_everything,
    ),
    Check(
        "reflection v1 lists methods",
        (GRPC, r"--reflect-protocol grpc-v1 ", r"--list-methods"),
        _lists_methods,
    ),
    Check(
        "reflection v1alpha lists services",
        (GRPC, r"--reflect-protocol grpc-v1alpha ", r"--list-services"),
        _lists_everything,
    ),
    Check("gRPC health", (GRPC, r"/grpc\.health\.v1\.Health/Check"), _serving),
    Check("gRPC CreditPoints", (GRPC, rf"/{POINTS}/CreditPoints "), _credited),
    Check("gRPC GetBalance", (GRPC, rf"/{POINTS}/GetBalance "), _balance),
    Check("Connect GetBalance (buf curl)", (CONNECT_BUF, rf"/{POINTS}/GetBalance "), _balance),
    Check("Connect ListLedger (buf curl)", (CONNECT_BUF, rf"/{POINTS}/ListLedger "), _ledger),
    Check(
        "Connect CreditPoints (curl JSON)",
        (r"^curl ", rf"/{POINTS}/CreditPoints ", "Content-Type: application/json"),
        _credited,
        required=False,
    ),
    Check(
        "Connect GetBalance (curl JSON)",
        (r"^curl ", rf"/{POINTS}/GetBalance ", "Content-Type: application/json"),
        _balance,
    ),
    Check("healthz", (r"^curl ", r"/healthz$"), _healthy),
    Check("readyz", (r"^curl ", r"/readyz$"), _ready),
    Check(
        "webhook answers GET with 405",
        (r"^curl ", r"%\{http_code\}", r"/api/paynow/webhook$"),
        _method_not_allowed,
    ),
    Check("metrics", (r"^curl ", r"/metrics$"), _prometheus),
)


def _check_for(command: str) -> Check:
    found = [check for check in CHECKS if check.matches(command)]
    assert len(found) == 1, (
        f"README command not covered by exactly one check ({[c.name for c in found]}): {command}"
    )
    return found[0]


def _argv(command: str, http_port: int, grpc_port: int, uid: str) -> list[str]:
    command = re.sub(r"\b(?:localhost|127\.0\.0\.1):8080\b", f"127.0.0.1:{http_port}", command)
    command = re.sub(r"\b(?:localhost|127\.0\.0\.1):50051\b", f"127.0.0.1:{grpc_port}", command)
    command = re.sub(r"\bu1\b", uid, command)
    argv = shlex.split(command)
    if argv[0] == "buf":
        argv[0] = str(BUF)
    else:
        assert CURL is not None
        argv[0] = CURL
    return argv


@pytest.fixture(scope="module")
def stack(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    if not BUF.is_file():
        pytest.skip("buf is not installed in this virtualenv (make install)")
    if CURL is None:
        pytest.skip("curl is not installed")
    log_dir = tmp_path_factory.mktemp("readme-stack")
    http_port, grpc_port = free_port(), free_port()
    env = stack_env(
        emulators.env(),
        write_catalog(log_dir),
        HTTP_ROUTES="webhook,push,points,metrics",
        PORT=str(http_port),
        GRPC_PORT=str(grpc_port),
    )
    serve = ServiceProcess("serve", env, log_dir, port=http_port).wait_ready()
    try:
        grpc = ServiceProcess("grpc", env, log_dir, port=grpc_port).wait_ready()
        try:
            yield http_port, grpc_port
        finally:
            grpc.stop()
    finally:
        serve.stop()


def test_every_readme_command_is_covered_and_the_tools_are_shown() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    used = {_check_for(command).name for command in commands}
    missing = {check.name for check in CHECKS if check.required} - used
    assert not missing, f"README lost these examples: {sorted(missing)}"


def test_readme_commands_run(stack: tuple[int, int]) -> None:
    http_port, grpc_port = stack
    uid = f"readme-{uuid.uuid4().hex[:10]}"
    for command in readme_commands(README.read_text(encoding="utf-8")):
        check = _check_for(command)
        result = subprocess.run(
            _argv(command, http_port, grpc_port, uid),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
        try:
            check.verify(result.stdout)
        except (AssertionError, ValueError, KeyError) as err:
            raise AssertionError(f"{check.name}: {command}\n{result.stdout}{result.stderr}") from err


def test_buf_curl_without_protocol_grpc_fails_on_the_grpc_port(stack: tuple[int, int]) -> None:
    """Why the README insists on `--protocol grpc`: Connect against the gRPC server is an HTTP/2 error."""
    _, grpc_port = stack
    result = subprocess.run(
        [
            str(BUF),
            "curl",
            "--http2-prior-knowledge",
            "--schema",
            "proto",
            f"http://127.0.0.1:{grpc_port}/{POINTS}/GetBalance",
            "-d",
            '{"uid":"nobody"}',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stdout


def test_reflection_v1_alone_describes_the_service(stack: tuple[int, int]) -> None:
    """`--reflect-protocol grpc-v1` never falls back to v1alpha: this call needs the v1 service."""
    _, grpc_port = stack
    result = subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--reflect-protocol",
            "grpc-v1",
            f"http://127.0.0.1:{grpc_port}/{POINTS}/GetBalance",
            "-d",
            '{"uid":"nobody-' + uuid.uuid4().hex + '"}',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert isinstance(_json(result.stdout), dict)
