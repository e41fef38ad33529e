#!/usr/bin/env bash
# Deploy paynow-service to Google Cloud: APIs, service accounts, IAM, the Cloud Run services
# from one image (webhook, worker, PointsService over gRPC and over Connect, the operator
# console), the Firestore security rules (firestore.rules), the Pub/Sub topology
# (`paynow-service infra apply`), the Firestore TTL policy, a scheduled `sweep` and
# `reconcile`, Managed Service for Prometheus on the services that serve /metrics, and the
# monitoring in infra/monitoring. Idempotent: run it again after any change.
#
#   NOTIFICATION_CHANNELS=<ids> PROJECT_ID=my-project REGION=europe-west1 deploy/deploy.sh
#   DRY_RUN=1 ... deploy/deploy.sh                        # print every command, change nothing
#   PROJECT_ID=my-project deploy/deploy.sh test-alert     # open a test incident on every channel
#
# Every setting is an environment variable; deploy/README.md lists them all.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: PROJECT_ID=<project> REGION=<region> [settings] deploy/deploy.sh [--no-notifications]
   or: PROJECT_ID=<project> deploy/deploy.sh test-alert
  PROJECT_ID  Google Cloud project id (required), e.g. acme-payments-prod
  REGION      Cloud Run / Artifact Registry region (required to deploy), e.g. europe-west1
  NOTIFICATION_CHANNELS  comma list of Cloud Monitoring notification channel ids the alert
              policies notify (required with MONITORING=1, unless --no-notifications)
  --no-notifications     install the alert policies without channels (they notify nobody)
  test-alert  write the log entry the policy "paynow: test alert" fires on: a test incident
              reaches every channel of the policies
  See deploy/README.md for IMAGE, service names, WEBHOOK_MODE, POINTS_ALLOWED_CALLERS, DRY_RUN ...
EOF
}

die() {
  printf 'deploy.sh: %s\n' "$*" >&2
  exit 2
}

# ---- 0. command line ------------------------------------------------------------------------
COMMAND=deploy
NO_NOTIFICATIONS=0
for arg in "$@"; do
  case "$arg" in
    --no-notifications) NO_NOTIFICATIONS=1 ;;
    test-alert) COMMAND=test-alert ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage
      die "unknown argument '$arg'"
      ;;
  esac
done

# ---- 1. settings, validated before any gcloud call ----------------------------------------
PROJECT_ID="${PROJECT_ID:-}"
REGION="${REGION:-}"
if [[ -z "$PROJECT_ID" || (-z "$REGION" && "$COMMAND" == deploy) ]]; then
  usage
  [[ -n "$PROJECT_ID" ]] || die "PROJECT_ID is required (the Google Cloud project to deploy to)"
  die "REGION is required (e.g. europe-west1)"
fi
[[ "$PROJECT_ID" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] \
  || die "PROJECT_ID='$PROJECT_ID' is not a project id: 6-30 characters, lowercase letters, digits, hyphens"
[[ -z "$REGION" || "$REGION" =~ ^[a-z]+(-[a-z]+)+[0-9]+$ ]] || die "REGION='$REGION' is not a region (e.g. europe-west1)"

DRY_RUN="${DRY_RUN:-0}"
AR_REPOSITORY="${AR_REPOSITORY:-paynow}"
IMAGE_TAG="${IMAGE_TAG:-latest}"
IMAGE="${IMAGE:-${REGION}-docker.pkg.dev/${PROJECT_ID}/${AR_REPOSITORY}/paynow-service:${IMAGE_TAG}}"
BUILD_IMAGE="${BUILD_IMAGE:-0}"

WEBHOOK_SERVICE="${WEBHOOK_SERVICE:-paynow-webhook}"
WORKER_SERVICE="${WORKER_SERVICE:-paynow-worker}"
POINTS_SERVICE="${POINTS_SERVICE:-paynow-points}"
POINTS_CONNECT_SERVICE="${POINTS_CONNECT_SERVICE:-paynow-points-connect}"
CONSOLE_SERVICE="${CONSOLE_SERVICE:-paynow-console}"
SWEEP_JOB="${SWEEP_JOB:-paynow-sweep}"
RECONCILE_JOB="${RECONCILE_JOB:-paynow-reconcile}"
INFRA_JOB="${INFRA_JOB:-paynow-infra}"

WEBHOOK_SA_NAME="${WEBHOOK_SA_NAME:-paynow-webhook}"
WORKER_SA_NAME="${WORKER_SA_NAME:-paynow-worker}"
POINTS_SA_NAME="${POINTS_SA_NAME:-paynow-points}"
PUSH_SA_NAME="${PUSH_SA_NAME:-paynow-push-invoker}"
SCHEDULER_SA_NAME="${SCHEDULER_SA_NAME:-paynow-scheduler}"
INFRA_SA_NAME="${INFRA_SA_NAME:-paynow-infra}"
CONSOLE_SA_NAME="${CONSOLE_SA_NAME:-paynow-console}"
RECONCILE_SA_NAME="${RECONCILE_SA_NAME:-paynow-reconcile}"

PUBSUB_TOPIC="${PUBSUB_TOPIC:-paynow-events}"
PUBSUB_DLQ_TOPIC="${PUBSUB_DLQ_TOPIC:-paynow-events-dlq}"
PUBSUB_SUBSCRIPTION="${PUBSUB_SUBSCRIPTION:-paynow-events-sub}"
PUBSUB_DLQ_SUBSCRIPTION="${PUBSUB_DLQ_SUBSCRIPTION:-paynow-events-dlq-sub}"
MAX_DELIVERY_ATTEMPTS="${MAX_DELIVERY_ATTEMPTS:-5}"
# Traces to Cloud Trace (README, "Tracing"): OTEL_EXPORTER=none turns them off.
OTEL_EXPORTER="${OTEL_EXPORTER:-gcp}"
TRACE_SAMPLE_RATIO="${TRACE_SAMPLE_RATIO:-0.1}"

WEBHOOK_SECRET="${WEBHOOK_SECRET:-paynow-webhook-secrets}"
SIGNING_SECRET="${SIGNING_SECRET:-paynow-event-signing-keys}"
CATALOG_SECRET="${CATALOG_SECRET-paynow-product-catalog}"
CATALOG_PATH="/etc/paynow/catalog.toml"
PAYNOW_STORE_ID="${PAYNOW_STORE_ID:-}"
WEBHOOK_MODE="${WEBHOOK_MODE:-}"
WEBHOOK_QUEUE_PERCENT="${WEBHOOK_QUEUE_PERCENT:-}"
WEBHOOK_MIN_INSTANCES="${WEBHOOK_MIN_INSTANCES:-1}"
# The worker's sizing (the design's: one warm instance, at most 10, 8 pushes at a time each).
WORKER_MIN_INSTANCES="${WORKER_MIN_INSTANCES:-1}"
WORKER_MAX_INSTANCES="${WORKER_MAX_INSTANCES:-10}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-8}"
POINTS_ALLOWED_CALLERS="${POINTS_ALLOWED_CALLERS:-}"
POINTS_CONNECT="${POINTS_CONNECT:-1}"
CONSOLE_OPERATORS="${CONSOLE_OPERATORS:-}"
GRPC_PORT=50051
# Managed Service for Prometheus: a collector beside the services that serve /metrics (worker,
# points-connect) scrapes 127.0.0.1:8080/metrics (its default configuration).
PROMETHEUS_SIDECAR="${PROMETHEUS_SIDECAR:-1}"
PROMETHEUS_SIDECAR_IMAGE="${PROMETHEUS_SIDECAR_IMAGE:-us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0}"
# The app's container name beside the collector (a service first deployed as one container may
# already name it otherwise: deploy/README.md).
APP_CONTAINER="${APP_CONTAINER:-app}"
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-}"
INFRA_RUNNER="${INFRA_RUNNER:-local}"
PAYNOW_CLI="${PAYNOW_CLI:-paynow-service}"
SWEEP_SCHEDULE="${SWEEP_SCHEDULE-*/15 * * * *}"
# Daily at 03:30; RECONCILE_FIX=1 lets it write one adjustment entry per drift (--fix).
RECONCILE_SCHEDULE="${RECONCILE_SCHEDULE-30 3 * * *}"
RECONCILE_FIX="${RECONCILE_FIX:-0}"
# A Cloud Storage bucket (it must exist) for the runs' JSON and Markdown reports; empty: they stay
# in the execution's memory (the summary is in Firestore reconcileReports/{report_id} either way).
RECONCILE_REPORTS_BUCKET="${RECONCILE_REPORTS_BUCKET:-}"
SCHEDULE_TIME_ZONE="${SCHEDULE_TIME_ZONE:-Etc/UTC}"
MONITORING="${MONITORING:-1}"
FIRESTORE_RULES="${FIRESTORE_RULES:-1}"
NOTIFICATION_CHANNELS="${NOTIFICATION_CHANNELS:-}"

[[ "$DRY_RUN" == 0 || "$DRY_RUN" == 1 ]] || die "DRY_RUN='$DRY_RUN': use 0 or 1"
[[ "$OTEL_EXPORTER" == gcp || "$OTEL_EXPORTER" == none ]] || die "OTEL_EXPORTER='$OTEL_EXPORTER': use gcp or none"
[[ "$BUILD_IMAGE" == 0 || "$BUILD_IMAGE" == 1 ]] || die "BUILD_IMAGE='$BUILD_IMAGE': use 0 or 1"
[[ "$MONITORING" == 0 || "$MONITORING" == 1 ]] || die "MONITORING='$MONITORING': use 0 or 1"
[[ "$FIRESTORE_RULES" == 0 || "$FIRESTORE_RULES" == 1 ]] || die "FIRESTORE_RULES='$FIRESTORE_RULES': use 0 or 1"
[[ "$APP_CONTAINER" =~ ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "APP_CONTAINER='$APP_CONTAINER' is not a container name"
for name in RECONCILE_FIX POINTS_CONNECT PROMETHEUS_SIDECAR; do
  [[ "${!name}" == 0 || "${!name}" == 1 ]] || die "$name='${!name}': use 0 or 1"
done
[[ -z "$WEBHOOK_MODE" || "$WEBHOOK_MODE" == sync || "$WEBHOOK_MODE" == queue ]] \
  || die "WEBHOOK_MODE='$WEBHOOK_MODE': use sync or queue (or leave it unset to keep the deployed value)"
# in_range VALUE LOW HIGH: a decimal integer within [LOW, HIGH].
in_range() { [[ "$1" =~ ^[0-9]{1,3}$ ]] && ((10#$1 >= $2 && 10#$1 <= $3)); }
if [[ -n "$WEBHOOK_QUEUE_PERCENT" ]] && ! in_range "$WEBHOOK_QUEUE_PERCENT" 0 100; then
  die "WEBHOOK_QUEUE_PERCENT='$WEBHOOK_QUEUE_PERCENT': use 0..100"
fi
in_range "$MAX_DELIVERY_ATTEMPTS" 5 100 || die "MAX_DELIVERY_ATTEMPTS='$MAX_DELIVERY_ATTEMPTS': use 5..100"
in_range "$WEBHOOK_MIN_INSTANCES" 0 100 || die "WEBHOOK_MIN_INSTANCES='$WEBHOOK_MIN_INSTANCES': use 0..100"
in_range "$WORKER_MIN_INSTANCES" 0 100 || die "WORKER_MIN_INSTANCES='$WORKER_MIN_INSTANCES': use 0..100"
in_range "$WORKER_MAX_INSTANCES" 1 999 || die "WORKER_MAX_INSTANCES='$WORKER_MAX_INSTANCES': use 1..999"
((10#$WORKER_MIN_INSTANCES <= 10#$WORKER_MAX_INSTANCES)) \
  || die "WORKER_MIN_INSTANCES=$WORKER_MIN_INSTANCES is above WORKER_MAX_INSTANCES=$WORKER_MAX_INSTANCES"
in_range "$WORKER_CONCURRENCY" 1 999 || die "WORKER_CONCURRENCY='$WORKER_CONCURRENCY': use 1..999"
# cron: five fields (Cloud Scheduler's unix-cron), or empty for no schedule.
for name in SWEEP_SCHEDULE RECONCILE_SCHEDULE; do
  [[ -z "${!name}" || "${!name}" =~ ^[^[:space:]]+([[:space:]]+[^[:space:]]+){4}$ ]] \
    || die "$name='${!name}' is not a cron schedule of five fields (e.g. '30 3 * * *'), or empty for none"
done
[[ -z "$RECONCILE_REPORTS_BUCKET" || "$RECONCILE_REPORTS_BUCKET" =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]] \
  || die "RECONCILE_REPORTS_BUCKET='$RECONCILE_REPORTS_BUCKET' is not a bucket name (without gs://)"
[[ "$SCHEDULE_TIME_ZONE" =~ ^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$ ]] \
  || die "SCHEDULE_TIME_ZONE='$SCHEDULE_TIME_ZONE' is not a time zone (e.g. Etc/UTC, Europe/Paris)"
# email_list NAME: a comma list of email addresses (spaces ignored), or empty.
email_list() {
  local item items
  IFS=',' read -r -a items <<< "${!1}"
  for item in ${items[@]+"${items[@]}"}; do
    item="${item// /}"
    [[ -z "$item" || "$item" =~ ^[^@[:space:]]+@[A-Za-z0-9.-]+\.[A-Za-z]+$ ]] \
      || die "$1: '$item' is not an email address (a comma list of emails is expected)"
  done
}
email_list POINTS_ALLOWED_CALLERS
email_list CONSOLE_OPERATORS
# Notification channels: ids, or full names (.../notificationChannels/ID) of this project.
channels=()
IFS=',' read -r -a channel_items <<< "$NOTIFICATION_CHANNELS"
for channel in ${channel_items[@]+"${channel_items[@]}"}; do
  channel="${channel// /}"
  [[ -n "$channel" ]] || continue
  [[ "${channel##*/}" =~ ^[0-9]+$ ]] \
    || die "NOTIFICATION_CHANNELS: '$channel' is not a notification channel id (gcloud beta monitoring channels list)"
  channels+=("projects/${PROJECT_ID}/notificationChannels/${channel##*/}")
done
NOTIFICATION_CHANNELS="$(
  IFS=','
  printf '%s' "${channels[*]}"
)"
if [[ "$COMMAND" == deploy && "$MONITORING" == 1 && -z "$NOTIFICATION_CHANNELS" && "$NO_NOTIFICATIONS" == 0 ]]; then
  die "NOTIFICATION_CHANNELS is empty: the alert policies would notify nobody. Set it to the channel ids
    (gcloud beta monitoring channels list --project=\$PROJECT_ID --format='value(name,displayName)'),
    or pass --no-notifications to install the policies without channels (or MONITORING=0 to skip them)"
fi
case "$INFRA_RUNNER" in local | job | skip) ;; *) die "INFRA_RUNNER='$INFRA_RUNNER': use local, job or skip" ;; esac
for name in WEBHOOK_SERVICE WORKER_SERVICE POINTS_SERVICE POINTS_CONNECT_SERVICE CONSOLE_SERVICE SWEEP_JOB \
  RECONCILE_JOB INFRA_JOB; do
  [[ "${!name}" =~ ^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$ ]] || die "$name='${!name}' is not a Cloud Run name"
done
for name in WEBHOOK_SA_NAME WORKER_SA_NAME POINTS_SA_NAME PUSH_SA_NAME SCHEDULER_SA_NAME INFRA_SA_NAME \
  CONSOLE_SA_NAME RECONCILE_SA_NAME; do
  [[ "${!name}" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "$name='${!name}' is not a service account id (6-30 chars)"
done
for name in PUBSUB_TOPIC PUBSUB_DLQ_TOPIC PUBSUB_SUBSCRIPTION PUBSUB_DLQ_SUBSCRIPTION; do
  [[ "${!name}" =~ ^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$ ]] || die "$name='${!name}' is not a Pub/Sub id"
done
if [[ "$DRY_RUN" == 0 ]]; then
  command -v gcloud > /dev/null || die "gcloud is not installed (https://cloud.google.com/sdk)"
  if [[ "$INFRA_RUNNER" == local && "$COMMAND" == deploy ]]; then
    command -v "$PAYNOW_CLI" > /dev/null \
      || die "INFRA_RUNNER=local needs '$PAYNOW_CLI' on PATH (make install; PAYNOW_CLI=.venv/bin/paynow-service), or use INFRA_RUNNER=job"
  fi
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RULES_FILE="$REPO_ROOT/firestore.rules"
MONITORING_DIR="$REPO_ROOT/infra/monitoring"
TEST_ALERT_POLICY="$MONITORING_DIR/alerts/test-alert.json"
TEST_ALERT_LOG=paynow-alert-test
if [[ "$FIRESTORE_RULES" == 1 && "$COMMAND" == deploy ]]; then
  [[ -f "$RULES_FILE" ]] || die "$RULES_FILE is missing (or set FIRESTORE_RULES=0 to leave the deployed rules alone)"
  if [[ "$DRY_RUN" == 0 ]]; then
    command -v curl > /dev/null || die "curl is not installed (it deploys firestore.rules; or set FIRESTORE_RULES=0)"
    command -v python3 > /dev/null || die "python3 is not installed (it deploys firestore.rules; or set FIRESTORE_RULES=0)"
  fi
fi
export CLOUDSDK_CORE_DISABLE_PROMPTS=1
# Request bodies and rendered files, removed on exit.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---- helpers --------------------------------------------------------------------------------
step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }

# run CMD...: run it, or print it (shell-quoted, on the script's stdout even where the
# command's own output is discarded) with DRY_RUN=1.
exec 3>&1
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    {
      printf '+'
      printf ' %q' "$@"
      printf '\n'
    } >&3
  else
    "$@"
  fi
}

gc() { run gcloud "$@" --project="$PROJECT_ID" --quiet; }

# exists CMD...: true when a read-only gcloud call succeeds (never true in a dry run).
exists() {
  [[ "$DRY_RUN" == 0 ]] || return 1
  gcloud "$@" --project="$PROJECT_ID" --quiet > /dev/null 2>&1
}

# read_value PLACEHOLDER CMD...: the output of a read-only gcloud call (the placeholder in a dry run).
read_value() {
  local placeholder="$1"
  shift
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s' "$placeholder"
  else
    gcloud "$@" --project="$PROJECT_ID" --quiet
  fi
}

sa_email() { printf '%s@%s.iam.gserviceaccount.com' "$1" "$PROJECT_ID"; }

ensure_sa() {
  local name="$1" description="$2"
  if exists iam service-accounts describe "$(sa_email "$name")"; then
    note "service account $(sa_email "$name") exists"
  else
    gc iam service-accounts create "$name" --display-name="$description"
  fi
}

project_role() {
  gc projects add-iam-policy-binding "$PROJECT_ID" --member="$1" --role="$2" --condition=None > /dev/null
}

require_secret() {
  local secret="$1" what="$2"
  if [[ "$DRY_RUN" == 0 ]] && ! exists secrets describe "$secret"; then
    die "Secret Manager secret '$secret' ($what) does not exist. Create it without putting the value in your shell history, e.g.:
    gcloud secrets create $secret --project=\$PROJECT_ID --replication-policy=automatic --data-file=FILE"
  fi
}

# env_flag K=V ...: one --update-env-vars value; '|' separates pairs so values may hold commas.
env_flag() {
  local IFS='|'
  printf -- '--update-env-vars=^|^%s' "$*"
}

# member EMAIL: the IAM member of an email (a service account, or a user).
member() {
  if [[ "$1" == *.gserviceaccount.com ]]; then
    printf 'serviceAccount:%s' "$1"
  else
    printf 'user:%s' "$1"
  fi
}

# invokers SERVICE LIST: roles/run.invoker on the Cloud Run service for each email of the comma list.
invokers() {
  local service="$1" email emails
  IFS=',' read -r -a emails <<< "$2"
  for email in ${emails[@]+"${emails[@]}"}; do
    email="${email// /}"
    [[ -n "$email" ]] || continue
    gc run services add-iam-policy-binding "$service" --region="$REGION" \
      --member="$(member "$email")" --role=roles/run.invoker > /dev/null
  done
}

# display_name FILE: the top-level displayName of a policy or dashboard file.
display_name() { sed -n 's/^  "displayName": "\(.*\)",$/\1/p' "$1"; }

# ---- test-alert: one log entry the policy "paynow: test alert" fires on ---------------------
if [[ "$COMMAND" == test-alert ]]; then
  [[ -f "$TEST_ALERT_POLICY" ]] || die "$TEST_ALERT_POLICY is missing"
  policy_name="$(display_name "$TEST_ALERT_POLICY")"
  step "Test incident: a log entry in $TEST_ALERT_LOG, which the policy '$policy_name' fires on"
  policy="$(read_value POLICY alpha monitoring policies list \
    --filter="displayName=\"$policy_name\"" --format='value(name)' --limit=1)"
  [[ -n "$policy" ]] || die "the project has no alert policy '$policy_name': run deploy/deploy.sh first"
  channels_of_policy="$(read_value CHANNELS alpha monitoring policies describe "$policy" \
    --format='value(notificationChannels)')"
  [[ -n "$channels_of_policy" ]] \
    || note "the policy has no notification channel: the incident opens, nobody is told (deploy with NOTIFICATION_CHANNELS)"
  gc logging write "$TEST_ALERT_LOG" \
    "{\"message\": \"paynow test alert\", \"test_alert\": true, \"requested_at\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" \
    --payload-type=json --severity=WARNING
  note "an incident opens within a few minutes and notifies: ${channels_of_policy:-nobody}"
  note "it closes by itself after 30 minutes (or close it in Monitoring > Alerting)"
  exit 0
fi

# ---- 2. APIs, project number, Firestore ----------------------------------------------------
step "Enabling APIs"
gc services enable run.googleapis.com pubsub.googleapis.com firestore.googleapis.com \
  secretmanager.googleapis.com iam.googleapis.com iamcredentials.googleapis.com \
  artifactregistry.googleapis.com cloudbuild.googleapis.com cloudscheduler.googleapis.com \
  logging.googleapis.com monitoring.googleapis.com firebaserules.googleapis.com \
  cloudtrace.googleapis.com

PROJECT_NUMBER="$(read_value PROJECT_NUMBER projects describe "$PROJECT_ID" --format='value(projectNumber)')"
PUBSUB_AGENT="service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
# Cloud Run's deterministic URLs: known before the first deploy, so the audiences can be set at once.
WORKER_URL="https://${WORKER_SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"
POINTS_URL="https://${POINTS_SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"
POINTS_CONNECT_URL="https://${POINTS_CONNECT_SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"
CONSOLE_URL="https://${CONSOLE_SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"
PUSH_ENDPOINT="${WORKER_URL}/api/tasks/paynow/process"
PUSH_AUDIENCE="${PUSH_AUDIENCE:-$WORKER_URL}"
POINTS_AUDIENCE="${POINTS_AUDIENCE:-$POINTS_URL}"
POINTS_CONNECT_AUDIENCE="${POINTS_CONNECT_AUDIENCE:-$POINTS_CONNECT_URL}"

step "Firestore"
if exists firestore databases describe --database='(default)'; then
  note "database (default) exists"
elif [[ -n "$FIRESTORE_LOCATION" ]]; then
  gc firestore databases create --database='(default)' --location="$FIRESTORE_LOCATION" --type=firestore-native
elif [[ "$DRY_RUN" == 0 ]]; then
  die "the project has no Firestore (default) database: set FIRESTORE_LOCATION (e.g. eur3) to create it"
fi

# One rules file governs the whole database, the app's collections included: firestore.rules
# holds the app's rules plus this service's (docs/security.md). gcloud has no command for
# them: the Firebase Rules API makes the file a ruleset, then points the database's release
# (cloud.firestore) at it.
if [[ "$FIRESTORE_RULES" == 1 ]]; then
  step "Firestore security rules: $RULES_FILE released as cloud.firestore"
  rules_api="https://firebaserules.googleapis.com/v1"
  release="projects/${PROJECT_ID}/releases/cloud.firestore"
  # The access token reaches curl in a config file (mode 600), never on a command line.
  rules_token="$(read_value ACCESS_TOKEN auth print-access-token)"
  (
    umask 077
    printf 'header = "Authorization: Bearer %s"\n' "$rules_token" > "$work/rules-auth"
  )
  unset rules_token
  # rules_call METHOD URL [CURL ARGS...]: one Firebase Rules API call, its JSON answer on stdout.
  rules_call() {
    local method="$1" url="$2"
    shift 2
    run curl --silent --show-error --fail-with-body --request "$method" --config "$work/rules-auth" \
      --header "X-Goog-User-Project: $PROJECT_ID" --header "Content-Type: application/json" "$@" "$url"
  }
  # json_field NAME: a top-level string of the JSON object on stdin ("" where absent).
  json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }
  # The release, when there is one (never in a dry run), and the source it serves.
  current=""
  if [[ "$DRY_RUN" == 0 ]] && answer="$(rules_call GET "$rules_api/$release" 2> /dev/null)"; then
    current="$(json_field rulesetName <<< "$answer")"
  fi
  if [[ -n "$current" ]] && rules_call GET "$rules_api/$current" | python3 -c '
import json, sys
files = json.load(sys.stdin).get("source", {}).get("files", [])
with open(sys.argv[1], encoding="utf-8") as rules:
    sys.exit(0 if [f.get("content") for f in files] == [rules.read()] else 1)
' "$RULES_FILE"; then
    note "$release already serves firestore.rules ($current): no new ruleset"
  else
    python3 -c '
import json, sys
with open(sys.argv[1], encoding="utf-8") as rules:
    content = rules.read()
json.dump({"source": {"files": [{"name": "firestore.rules", "content": content}]}}, sys.stdout)
' "$RULES_FILE" > "$work/ruleset.json"
    # A file that does not compile is refused here, with the compiler's messages.
    ruleset="$(rules_call POST "$rules_api/projects/${PROJECT_ID}/rulesets" --data-binary "@$work/ruleset.json")" \
      || die "the Firebase Rules API refused firestore.rules: $ruleset"
    if [[ "$DRY_RUN" == 1 ]]; then
      ruleset_name="projects/${PROJECT_ID}/rulesets/RULESET_ID"
    else
      ruleset_name="$(json_field name <<< "$ruleset")"
      [[ -n "$ruleset_name" ]] || die "the Firebase Rules API returned no ruleset name: $ruleset"
    fi
    # The release body: the Release itself to create it, wrapped in {"release": ...} to update it.
    release_json() {
      python3 -c '
import json, sys
release = {"name": sys.argv[1], "rulesetName": sys.argv[2]}
json.dump({"release": release} if sys.argv[3] == "update" else release, sys.stdout)
' "$release" "$ruleset_name" "$1" > "$work/release.json"
    }
    if [[ -n "$current" ]]; then
      release_json update
      answer="$(rules_call PATCH "$rules_api/$release" --data-binary "@$work/release.json")" \
        || die "updating $release failed: $answer"
    else
      release_json create
      answer="$(rules_call POST "$rules_api/projects/${PROJECT_ID}/releases" --data-binary "@$work/release.json")" \
        || die "creating $release failed: $answer"
    fi
    note "cloud.firestore now serves $ruleset_name (was: ${current:-no release})"
  fi
fi

# ---- 3. image --------------------------------------------------------------------------------
if [[ "$BUILD_IMAGE" == 1 ]]; then
  step "Building $IMAGE with Cloud Build"
  if ! exists artifacts repositories describe "$AR_REPOSITORY" --location="$REGION"; then
    gc artifacts repositories create "$AR_REPOSITORY" --location="$REGION" --repository-format=docker
  fi
  gc builds submit "$REPO_ROOT" --tag="$IMAGE" --region="$REGION"
fi

# ---- 4. secrets, service accounts, project-level IAM -----------------------------------------
step "Secrets"
require_secret "$WEBHOOK_SECRET" "PAYNOW_WEBHOOK_SECRETS: comma list of PayNow webhook secrets"
require_secret "$SIGNING_SECRET" "EVENT_SIGNING_KEYS: comma list of event signing keys, 32+ characters each, the first signs"
if [[ -n "$CATALOG_SECRET" ]]; then
  require_secret "$CATALOG_SECRET" "PRODUCT_CATALOG: the TOML product catalog"
else
  note "CATALOG_SECRET is empty: no PRODUCT_CATALOG mounted (only outside plugins map products)"
fi

step "Service accounts"
WEBHOOK_SA="$(sa_email "$WEBHOOK_SA_NAME")"
WORKER_SA="$(sa_email "$WORKER_SA_NAME")"
POINTS_SA="$(sa_email "$POINTS_SA_NAME")"
PUSH_SA="$(sa_email "$PUSH_SA_NAME")"
SCHEDULER_SA="$(sa_email "$SCHEDULER_SA_NAME")"
INFRA_SA="$(sa_email "$INFRA_SA_NAME")"
ensure_sa "$WEBHOOK_SA_NAME" "paynow webhook (records and publishes events)"
ensure_sa "$WORKER_SA_NAME" "paynow worker (credits wallets)"
ensure_sa "$POINTS_SA_NAME" "paynow PointsService"
ensure_sa "$PUSH_SA_NAME" "paynow Pub/Sub push invoker (OIDC identity of pushes)"
CONSOLE_SA="$(sa_email "$CONSOLE_SA_NAME")"
RECONCILE_SA="$(sa_email "$RECONCILE_SA_NAME")"
[[ -z "$SWEEP_SCHEDULE$RECONCILE_SCHEDULE" ]] \
  || ensure_sa "$SCHEDULER_SA_NAME" "paynow scheduler (runs the sweep and reconcile jobs)"
[[ "$INFRA_RUNNER" != job ]] || ensure_sa "$INFRA_SA_NAME" "paynow infra apply job"
ensure_sa "$RECONCILE_SA_NAME" "paynow reconcile job (audits wallets; --fix writes adjustments)"
[[ -z "$CONSOLE_OPERATORS" ]] || ensure_sa "$CONSOLE_SA_NAME" "paynow operator console"

step "Project-level roles"
for sa in "$WEBHOOK_SA" "$WORKER_SA" "$POINTS_SA" "$RECONCILE_SA"; do
  project_role "serviceAccount:$sa" roles/datastore.user
done
[[ -z "$CONSOLE_OPERATORS" ]] || project_role "serviceAccount:$CONSOLE_SA" roles/datastore.user
if [[ "$OTEL_EXPORTER" == gcp ]]; then
  # The services that trace write their spans to Cloud Trace with their own identity.
  for sa in "$WEBHOOK_SA" "$WORKER_SA" "$POINTS_SA"; do
    project_role "serviceAccount:$sa" roles/cloudtrace.agent
  done
fi
if [[ "$PROMETHEUS_SIDECAR" == 1 ]]; then
  # The Prometheus collector beside the worker and points-connect writes with the service's identity.
  for sa in "$WORKER_SA" "$POINTS_SA"; do
    project_role "serviceAccount:$sa" roles/monitoring.metricWriter
  done
fi
if [[ "$INFRA_RUNNER" == job ]]; then
  project_role "serviceAccount:$INFRA_SA" roles/pubsub.editor
  project_role "serviceAccount:$INFRA_SA" roles/datastore.indexAdmin
  # Setting the push subscription's OIDC identity means acting as the push invoker.
  gc iam service-accounts add-iam-policy-binding "$PUSH_SA" \
    --member="serviceAccount:$INFRA_SA" --role=roles/iam.serviceAccountUser > /dev/null
fi

step "Secret access"
gc secrets add-iam-policy-binding "$WEBHOOK_SECRET" \
  --member="serviceAccount:$WEBHOOK_SA" --role=roles/secretmanager.secretAccessor > /dev/null
# The webhook and sweep (webhook SA) sign the events they publish; the worker verifies them.
for sa in "$WEBHOOK_SA" "$WORKER_SA"; do
  gc secrets add-iam-policy-binding "$SIGNING_SECRET" \
    --member="serviceAccount:$sa" --role=roles/secretmanager.secretAccessor > /dev/null
done
if [[ -n "$CATALOG_SECRET" ]]; then
  for sa in "$WEBHOOK_SA" "$WORKER_SA" "$RECONCILE_SA"; do
    gc secrets add-iam-policy-binding "$CATALOG_SECRET" \
      --member="serviceAccount:$sa" --role=roles/secretmanager.secretAccessor > /dev/null
  done
fi

step "Pub/Sub service agent: may mint OIDC tokens for pushes"
# Make sure the agent exists (a fresh project creates it lazily).
gc beta services identity create --service=pubsub.googleapis.com > /dev/null
gc iam service-accounts add-iam-policy-binding "$PUSH_SA" \
  --member="serviceAccount:$PUBSUB_AGENT" --role=roles/iam.serviceAccountTokenCreator > /dev/null

# ---- 5. Cloud Run services (one image) ---------------------------------------------------------
common_env=(
  "GOOGLE_CLOUD_PROJECT=$PROJECT_ID"
  "PUBSUB_TOPIC=$PUBSUB_TOPIC"
  "PUBSUB_DLQ_TOPIC=$PUBSUB_DLQ_TOPIC"
  "PUBSUB_SUBSCRIPTION=$PUBSUB_SUBSCRIPTION"
  "PUBSUB_DLQ_SUBSCRIPTION=$PUBSUB_DLQ_SUBSCRIPTION"
  "MAX_DELIVERY_ATTEMPTS=$MAX_DELIVERY_ATTEMPTS"
  "OTEL_EXPORTER=$OTEL_EXPORTER"
  "TRACE_SAMPLE_RATIO=$TRACE_SAMPLE_RATIO"
)
# Every service or job that publishes events (webhook, sweep) or verifies them (worker).
signing_secret="--update-secrets=EVENT_SIGNING_KEYS=${SIGNING_SECRET}:latest"
catalog_env=()
catalog_secret=()
if [[ -n "$CATALOG_SECRET" ]]; then
  catalog_env=("PRODUCT_CATALOG=$CATALOG_PATH")
  catalog_secret=("--update-secrets=${CATALOG_PATH}=${CATALOG_SECRET}:latest")
fi

# The services that serve /metrics (private ones only: the public webhook never does) run the
# Managed Service for Prometheus collector beside the app: the app's flags follow
# --container=APP_CONTAINER, the collector's --container=collector (it scrapes 127.0.0.1:8080/metrics).
app_container=()
collector=()
if [[ "$PROMETHEUS_SIDECAR" == 1 ]]; then
  app_container=("--container=$APP_CONTAINER")
  collector=(--container=collector "--image=$PROMETHEUS_SIDECAR_IMAGE" "--depends-on=$APP_CONTAINER")
fi

step "Cloud Run: $WORKER_SERVICE (Pub/Sub push endpoint and /metrics, private)"
gc run deploy "$WORKER_SERVICE" --region="$REGION" --service-account="$WORKER_SA" --no-allow-unauthenticated \
  --timeout=600 --concurrency="$WORKER_CONCURRENCY" --min-instances="$WORKER_MIN_INSTANCES" \
  --max-instances="$WORKER_MAX_INSTANCES" \
  ${app_container[@]+"${app_container[@]}"} --image="$IMAGE" --args=serve --port=8080 \
  "$(env_flag "${common_env[@]}" ${catalog_env[@]+"${catalog_env[@]}"} HTTP_ROUTES=push,metrics \
    "PUSH_AUDIENCE=$PUSH_AUDIENCE" "PUSH_SERVICE_ACCOUNT=$PUSH_SA")" \
  "$signing_secret" ${catalog_secret[@]+"${catalog_secret[@]}"} ${collector[@]+"${collector[@]}"}
gc run services add-iam-policy-binding "$WORKER_SERVICE" --region="$REGION" \
  --member="serviceAccount:$PUSH_SA" --role=roles/run.invoker > /dev/null

step "Cloud Run: $WEBHOOK_SERVICE (PayNow webhook, public)"
webhook_env=("${common_env[@]}" ${catalog_env[@]+"${catalog_env[@]}"} HTTP_ROUTES=webhook)
[[ -z "$PAYNOW_STORE_ID" ]] || webhook_env+=("PAYNOW_STORE_ID=$PAYNOW_STORE_ID")
if [[ -n "$WEBHOOK_MODE" ]]; then
  webhook_env+=("WEBHOOK_MODE=$WEBHOOK_MODE")
elif exists run services describe "$WEBHOOK_SERVICE" --region="$REGION"; then
  note "WEBHOOK_MODE unset: keeping the deployed value (a rollback to sync stays in place)"
else
  webhook_env+=(WEBHOOK_MODE=sync)
  note "new service: WEBHOOK_MODE=sync; cut over with WEBHOOK_MODE=queue WEBHOOK_QUEUE_PERCENT=10 (docs/runbook.md)"
fi
[[ -z "$WEBHOOK_QUEUE_PERCENT" ]] || webhook_env+=("WEBHOOK_QUEUE_PERCENT=$WEBHOOK_QUEUE_PERCENT")
gc run deploy "$WEBHOOK_SERVICE" --image="$IMAGE" --region="$REGION" \
  --service-account="$WEBHOOK_SA" --allow-unauthenticated --args=serve \
  "$(env_flag "${webhook_env[@]}")" \
  "--update-secrets=PAYNOW_WEBHOOK_SECRETS=${WEBHOOK_SECRET}:latest" "$signing_secret" \
  ${catalog_secret[@]+"${catalog_secret[@]}"} \
  --timeout=30 --min-instances="$WEBHOOK_MIN_INSTANCES" --cpu-boost

step "Cloud Run: $POINTS_SERVICE (PointsService over gRPC, private) and $POINTS_CONNECT_SERVICE (over Connect)"
if [[ -z "$POINTS_ALLOWED_CALLERS" ]]; then
  note "POINTS_ALLOWED_CALLERS is empty: $POINTS_SERVICE and $POINTS_CONNECT_SERVICE skipped (they refuse to start without callers)"
else
  gc run deploy "$POINTS_SERVICE" --image="$IMAGE" --region="$REGION" \
    --service-account="$POINTS_SA" --no-allow-unauthenticated --args=grpc --use-http2 \
    --port="$GRPC_PORT" \
    "$(env_flag "${common_env[@]}" "GRPC_PORT=$GRPC_PORT" "POINTS_AUDIENCE=$POINTS_AUDIENCE" \
      "POINTS_ALLOWED_CALLERS=$POINTS_ALLOWED_CALLERS")"
  invokers "$POINTS_SERVICE" "$POINTS_ALLOWED_CALLERS"
  if [[ "$POINTS_CONNECT" == 1 ]]; then
    # The same PointsService over Connect and JSON (HTTP/1.1 or 2 to Cloud Run, HTTP/1.1 to the
    # container: uvicorn), with /metrics for the collector.
    gc run deploy "$POINTS_CONNECT_SERVICE" --region="$REGION" --service-account="$POINTS_SA" \
      --no-allow-unauthenticated \
      ${app_container[@]+"${app_container[@]}"} --image="$IMAGE" --args=serve --port=8080 \
      "$(env_flag "${common_env[@]}" HTTP_ROUTES=points,metrics "POINTS_AUDIENCE=$POINTS_CONNECT_AUDIENCE" \
        "POINTS_ALLOWED_CALLERS=$POINTS_ALLOWED_CALLERS")" \
      ${collector[@]+"${collector[@]}"}
    invokers "$POINTS_CONNECT_SERVICE" "$POINTS_ALLOWED_CALLERS"
  else
    note "POINTS_CONNECT=0: PointsService over gRPC only"
  fi
fi

step "Cloud Run: $CONSOLE_SERVICE (operator console, private)"
if [[ -z "$CONSOLE_OPERATORS" ]]; then
  note "CONSOLE_OPERATORS is empty: $CONSOLE_SERVICE skipped (it admits nobody without operators)"
else
  # Private twice: Cloud Run admits only the operators' ID tokens (roles/run.invoker), and the
  # app checks the same token's email against CONSOLE_OPERATORS.
  gc run deploy "$CONSOLE_SERVICE" --image="$IMAGE" --region="$REGION" \
    --service-account="$CONSOLE_SA" --no-allow-unauthenticated --args=serve \
    "$(env_flag "${common_env[@]}" HTTP_ROUTES=console "CONSOLE_OPERATORS=$CONSOLE_OPERATORS")" \
    --timeout=60 --min-instances=0 --max-instances=2
  invokers "$CONSOLE_SERVICE" "$CONSOLE_OPERATORS"
fi

# ---- 6. Pub/Sub topology (and on GCP the topic schema and TTL policy) ------------------------
step "Pub/Sub topics and subscriptions: paynow-service infra apply --push-endpoint $PUSH_ENDPOINT"
infra_env=("${common_env[@]}" "PUSH_AUDIENCE=$PUSH_AUDIENCE" "PUSH_SERVICE_ACCOUNT=$PUSH_SA")
case "$INFRA_RUNNER" in
  local)
    # Application Default Credentials of the person deploying (gcloud auth application-default login).
    run env "${infra_env[@]}" "$PAYNOW_CLI" infra apply --push-endpoint "$PUSH_ENDPOINT"
    ;;
  job)
    gc run jobs deploy "$INFRA_JOB" --image="$IMAGE" --region="$REGION" \
      --service-account="$INFRA_SA" --max-retries=0 --task-timeout=600 \
      "--args=infra,apply,--push-endpoint,$PUSH_ENDPOINT" "$(env_flag "${infra_env[@]}")"
    gc run jobs execute "$INFRA_JOB" --region="$REGION" --wait
    ;;
  skip)
    note "INFRA_RUNNER=skip: run it yourself, then run this script again for the topic IAM bindings:"
    note "  env ${infra_env[*]} paynow-service infra apply --push-endpoint $PUSH_ENDPOINT"
    ;;
esac

step "Topic and subscription IAM (the topics exist now)"
topic_role() {
  gc pubsub topics add-iam-policy-binding "$1" --member="$2" --role=roles/pubsub.publisher > /dev/null
}
topic_role "$PUBSUB_TOPIC" "serviceAccount:$WEBHOOK_SA"
# /readyz in queue mode reads the topic (pubsub.topics.get).
gc pubsub topics add-iam-policy-binding "$PUBSUB_TOPIC" \
  --member="serviceAccount:$WEBHOOK_SA" --role=roles/pubsub.viewer > /dev/null
# The sync path and the worker dead-letter terminal failures themselves.
topic_role "$PUBSUB_DLQ_TOPIC" "serviceAccount:$WEBHOOK_SA"
topic_role "$PUBSUB_DLQ_TOPIC" "serviceAccount:$WORKER_SA"
# Pub/Sub forwards a message after MAX_DELIVERY_ATTEMPTS: it must publish to the DLQ and ack the source.
topic_role "$PUBSUB_DLQ_TOPIC" "serviceAccount:$PUBSUB_AGENT"
gc pubsub subscriptions add-iam-policy-binding "$PUBSUB_SUBSCRIPTION" \
  --member="serviceAccount:$PUBSUB_AGENT" --role=roles/pubsub.subscriber > /dev/null
# reconcile reports the dead letters' age (it reads the DLQ subscription, acknowledging nothing).
gc pubsub subscriptions add-iam-policy-binding "$PUBSUB_DLQ_SUBSCRIPTION" \
  --member="serviceAccount:$RECONCILE_SA" --role=roles/pubsub.subscriber > /dev/null
if [[ -n "$CONSOLE_OPERATORS" ]]; then
  # The console's DLQ page reads and acknowledges dead letters and replays them onto the topic.
  gc pubsub subscriptions add-iam-policy-binding "$PUBSUB_DLQ_SUBSCRIPTION" \
    --member="serviceAccount:$CONSOLE_SA" --role=roles/pubsub.subscriber > /dev/null
  topic_role "$PUBSUB_TOPIC" "serviceAccount:$CONSOLE_SA"
fi

# ---- 7. Firestore TTL (also done by infra apply on GCP; harmless twice) ----------------------
step "Firestore TTL policy on webhookEvents.expiresAt"
gc firestore fields ttls update expiresAt --collection-group=webhookEvents --database='(default)' \
  --enable-ttl --async

# ---- 8. scheduled jobs: sweep, reconcile ---------------------------------------------------------
# schedule JOB CRON: Cloud Scheduler runs the Cloud Run job JOB on CRON, as the scheduler SA.
schedule() {
  local job="$1" cron="$2" scheduler
  gc run jobs add-iam-policy-binding "$job" --region="$REGION" \
    --member="serviceAccount:$SCHEDULER_SA" --role=roles/run.invoker > /dev/null
  scheduler=(--location="$REGION" --schedule="$cron" --time-zone="$SCHEDULE_TIME_ZONE"
    --uri="https://run.googleapis.com/v2/projects/${PROJECT_ID}/locations/${REGION}/jobs/${job}:run"
    --http-method=POST --oauth-service-account-email="$SCHEDULER_SA")
  if exists scheduler jobs describe "$job" --location="$REGION"; then
    gc scheduler jobs update http "$job" "${scheduler[@]}"
  else
    gc scheduler jobs create http "$job" "${scheduler[@]}"
  fi
}

if [[ -n "$SWEEP_SCHEDULE" ]]; then
  step "Cloud Run job $SWEEP_JOB (paynow-service sweep) on schedule '$SWEEP_SCHEDULE'"
  # sweep does what the webhook does (publish recorded events): same identity.
  gc run jobs deploy "$SWEEP_JOB" --image="$IMAGE" --region="$REGION" \
    --service-account="$WEBHOOK_SA" --args=sweep --max-retries=0 --task-timeout=600 \
    "$(env_flag "${common_env[@]}")" "$signing_secret"
  schedule "$SWEEP_JOB" "$SWEEP_SCHEDULE"
else
  note "SWEEP_SCHEDULE is empty: no scheduled sweep (run \`paynow-service sweep\` by hand)"
fi

# reconcile audits wallets against their ledgers and lots, events against entries, orders, and the
# DLQ's age; it logs "Reconciliation finished" with drift_count, which the drift alert counts, and
# exits 1 when drift is left unfixed (that execution shows as failed too). Report-only unless
# RECONCILE_FIX=1.
reconcile_args=--args=reconcile,--out,/tmp/reconcile-reports
reports_volume=()
if [[ -n "$RECONCILE_REPORTS_BUCKET" ]]; then
  reconcile_args=--args=reconcile,--out,/reports
  reports_volume=("--add-volume=name=reports,type=cloud-storage,bucket=$RECONCILE_REPORTS_BUCKET"
    "--add-volume-mount=volume=reports,mount-path=/reports")
  run gcloud storage buckets add-iam-policy-binding "gs://$RECONCILE_REPORTS_BUCKET" \
    --member="serviceAccount:$RECONCILE_SA" --role=roles/storage.objectAdmin --project="$PROJECT_ID" > /dev/null
fi
[[ "$RECONCILE_FIX" == 0 ]] || reconcile_args="$reconcile_args,--fix"
step "Cloud Run job $RECONCILE_JOB (paynow-service ${reconcile_args#--args=}) on schedule '${RECONCILE_SCHEDULE:-none}'"
gc run jobs deploy "$RECONCILE_JOB" --image="$IMAGE" --region="$REGION" \
  --service-account="$RECONCILE_SA" "$reconcile_args" --max-retries=0 --task-timeout=3600 \
  "$(env_flag "${common_env[@]}" ${catalog_env[@]+"${catalog_env[@]}"})" ${catalog_secret[@]+"${catalog_secret[@]}"} \
  ${reports_volume[@]+"${reports_volume[@]}"}
if [[ -n "$RECONCILE_SCHEDULE" ]]; then
  schedule "$RECONCILE_JOB" "$RECONCILE_SCHEDULE"
else
  note "RECONCILE_SCHEDULE is empty: run it with \`gcloud run jobs execute $RECONCILE_JOB --region=$REGION --wait\`"
fi

# ---- 9. monitoring -----------------------------------------------------------------------------
if [[ "$MONITORING" == 1 ]]; then
  step "Log-based metrics, alert policies, dashboard (infra/monitoring)"
  monitoring="$MONITORING_DIR"
  rendered="$work/monitoring"
  mkdir "$rendered"
  for file in "$monitoring"/metrics/*.json; do
    metric="$(basename "$file" .json)"
    if exists logging metrics describe "$metric"; then
      gc logging metrics update "$metric" --config-from-file="$file"
    else
      gc logging metrics create "$metric" --config-from-file="$file"
    fi
  done
  for file in "$monitoring"/alerts/*.json "$monitoring"/dashboards/*.json; do
    # The files name the default subscriptions and services; follow the names chosen here.
    out="$rendered/$(basename "$(dirname "$file")")-$(basename "$file")"
    sed -e "s/subscription_id=\\\\\"paynow-events-sub\\\\\"/subscription_id=\\\\\"${PUBSUB_SUBSCRIPTION}\\\\\"/g" \
      -e "s/subscription_id=\\\\\"paynow-events-dlq-sub\\\\\"/subscription_id=\\\\\"${PUBSUB_DLQ_SUBSCRIPTION}\\\\\"/g" \
      -e "s/service_name=\\\\\"paynow-webhook\\\\\"/service_name=\\\\\"${WEBHOOK_SERVICE}\\\\\"/g" \
      -e "s/service_name=\\\\\"paynow-worker\\\\\"/service_name=\\\\\"${WORKER_SERVICE}\\\\\"/g" \
      "$file" > "$out"
    display="$(display_name "$out")"
    if [[ "$file" == */alerts/* ]]; then
      existing="$(read_value "" alpha monitoring policies list \
        --filter="displayName=\"$display\"" --format='value(name)' --limit=1)"
      if [[ -n "$existing" ]]; then
        gc alpha monitoring policies update "$existing" --policy-from-file="$out" \
          ${NOTIFICATION_CHANNELS:+"--set-notification-channels=$NOTIFICATION_CHANNELS"}
      else
        gc alpha monitoring policies create --policy-from-file="$out" \
          ${NOTIFICATION_CHANNELS:+"--notification-channels=$NOTIFICATION_CHANNELS"}
      fi
    else
      existing="$(read_value "" monitoring dashboards list \
        --filter="displayName=\"$display\"" --format='value(name)' --limit=1)"
      if [[ -n "$existing" ]]; then
        gc monitoring dashboards update "$existing" --config-from-file="$out"
      else
        gc monitoring dashboards create --config-from-file="$out"
      fi
    fi
  done
  if [[ -n "$NOTIFICATION_CHANNELS" ]]; then
    note "every policy notifies $NOTIFICATION_CHANNELS; check it: PROJECT_ID=$PROJECT_ID deploy/deploy.sh test-alert"
  else
    note "--no-notifications: the alert policies notify nobody until you add channels"
  fi
fi

# ---- done --------------------------------------------------------------------------------------
WEBHOOK_URL="$(read_value "https://${WEBHOOK_SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app" \
  run services describe "$WEBHOOK_SERVICE" --region="$REGION" --format='value(status.url)')"
step "Deployed"
note "PayNow webhook URL: ${WEBHOOK_URL}/api/paynow/webhook"
note "worker push endpoint: $PUSH_ENDPOINT (audience $PUSH_AUDIENCE, account $PUSH_SA)"
if [[ -n "$POINTS_ALLOWED_CALLERS" ]]; then
  note "PointsService over gRPC: $POINTS_URL (audience $POINTS_AUDIENCE)"
  [[ "$POINTS_CONNECT" == 0 ]] \
    || note "PointsService over Connect: $POINTS_CONNECT_URL/paynow.points.v1.PointsService/ (audience $POINTS_CONNECT_AUDIENCE)"
fi
[[ -z "$CONSOLE_OPERATORS" ]] \
  || note "operator console: $CONSOLE_URL (gcloud run services proxy $CONSOLE_SERVICE --region=$REGION, then http://localhost:8080)"
note "next: check /readyz, send a test webhook, then follow docs/runbook.md to cut over to queue mode"
