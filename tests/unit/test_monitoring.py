"""infra/monitoring: valid JSON whose log filters match what the service really logs.

Every `jsonPayload.message`, `jsonPayload.component` and `rejection_reason` value quoted
in a filter must occur as a string literal in the paynow_service source, so renaming a
log message (or a component) breaks this test instead of silently flattening a metric.
Every field a metric extracts or compares (`EXTRACT(jsonPayload.processing_ms)`,
`jsonPayload.drift_count>0`) must be a field the service logs (a keyword of a log call or a
string key), and the alerts the design asks for must exist with the design's thresholds.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "infra" / "monitoring"
FILES = sorted(MONITORING.rglob("*.json"))
CHECKED_FIELDS = ("message", "component", "rejection_reason")
# `jsonPayload.message="x"`, `jsonPayload.message=("x" OR "y")`, `metric.label.rejection_reason="x"`.
_FIELD = r"(?:jsonPayload|metric\.labels?)\.(?P<field>{fields})"
_VALUE = re.compile(
    _FIELD.format(fields="|".join(CHECKED_FIELDS)) + r'\s*(?P<op>=|:)\s*(?P<rhs>"(?:[^"\\]|\\.)*"|\([^)]*\))'
)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _filters(node: Any) -> list[str]:
    """Every filter string in a metric, alert policy or dashboard (any nesting)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("filter", "denominatorFilter") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_filters(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_filters(item))
    return found


@cache
def _source_literals() -> frozenset[str]:
    """Every string constant in paynow_service code (f-string parts included); gen/ excluded."""
    literals: set[str] = set()
    for path in (ROOT / "paynow_service").rglob("*.py"):
        if "gen" in path.relative_to(ROOT / "paynow_service").parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Docstrings (bare string statements) do not count: a message must be in code.
        bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare:
                literals.add(node.value)
    return frozenset(literals)


@cache
def _logged_field_names() -> frozenset[str]:
    """Names a log line can carry: keyword arguments (`log(..., drift_count=n)`) and string constants."""
    names: set[str] = set(_source_literals())
    for path in (ROOT / "paynow_service").rglob("*.py"):
        if "gen" in path.relative_to(ROOT / "paynow_service").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg is not None:
                names.add(node.arg)
    return frozenset(names)


# Fields a metric reads that the service does not log yet, and why (an xfail, strict: it fails as
# soon as the field is logged, so the entry is removed then).
PENDING_FIELDS: dict[str, str] = {}
_EXTRACTED = re.compile(r"EXTRACT\(jsonPayload\.([A-Za-z0-9_]+)\)")
_COMPARED = re.compile(r"jsonPayload\.([A-Za-z0-9_]+)\s*(?:>=|<=|>|<)")


def _read_fields() -> list[Any]:
    fields: set[tuple[str, str]] = set()
    for path in FILES:
        document = _load(path)
        where = path.relative_to(MONITORING).as_posix()
        extractors = [document.get("valueExtractor", ""), *document.get("labelExtractors", {}).values()]
        for text in extractors:
            fields.update((where, name) for name in _EXTRACTED.findall(text))
        for text in _filters(document):
            fields.update((where, name) for name in _COMPARED.findall(text))
    return [
        pytest.param(where, name, marks=pytest.mark.xfail(reason=PENDING_FIELDS[name], strict=True))
        if name in PENDING_FIELDS
        else pytest.param(where, name)
        for where, name in sorted(fields)
    ]


def _quoted_values() -> list[tuple[str, str, str]]:
    values: list[tuple[str, str, str]] = []
    for path in FILES:
        for text in _filters(_load(path)):
            for match in _VALUE.finditer(text):
                for value in _QUOTED.findall(match["rhs"]):
                    values.append((path.relative_to(MONITORING).as_posix(), match["field"], value))
    return values


def test_there_are_metrics_alerts_and_a_dashboard() -> None:
    kinds = {path.parent.name for path in FILES}
    assert kinds == {"metrics", "alerts", "dashboards"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(MONITORING).as_posix())
def test_file_is_valid_json_without_payload_severity_or_project(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    document = _load(path)
    assert isinstance(document, dict)
    # Cloud Logging lifts `severity` out of the payload: jsonPayload.severity never matches.
    assert "jsonPayload.severity" not in text
    # Project-independent: deploy/deploy.sh applies the same files to any project.
    assert "projects/" not in text
    assert _filters(document), "no filter at all"


@pytest.mark.parametrize("path", sorted(MONITORING.glob("metrics/*.json")), ids=lambda p: p.stem)
def test_log_metric_is_well_formed(path: Path) -> None:
    metric = _load(path)
    assert metric["name"] == path.stem
    descriptor = metric["metricDescriptor"]
    assert descriptor["metricKind"] == "DELTA"
    labels = {label["key"] for label in descriptor.get("labels", [])}
    assert labels == set(metric.get("labelExtractors", {}))
    if descriptor["valueType"] == "DISTRIBUTION":
        assert metric["valueExtractor"].startswith("EXTRACT(jsonPayload.")


@pytest.mark.parametrize("path", sorted(MONITORING.glob("alerts/*.json")), ids=lambda p: p.stem)
def test_alert_policy_is_well_formed(path: Path) -> None:
    policy = _load(path)
    assert policy["conditions"]
    assert policy["documentation"]["content"]
    # deploy.sh finds an existing policy by its top-level displayName on a line of its own.
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith('  "displayName": ')
    ]
    assert lines == [f'  "displayName": {json.dumps(policy["displayName"])},']
    metric_names = {p.stem for p in MONITORING.glob("metrics/*.json")}
    for text in _filters(policy):
        for name in re.findall(r"logging\.googleapis\.com/user/([A-Za-z0-9_]+)", text):
            assert name in metric_names, (
                f"{path.name} uses log metric {name} that infra/monitoring does not define"
            )


@pytest.mark.parametrize(
    ("where", "field", "value"), _quoted_values(), ids=lambda v: v if isinstance(v, str) else None
)
def test_filter_value_is_logged_by_the_service(where: str, field: str, value: str) -> None:
    assert value in _source_literals(), (
        f"{where}: {field} {value!r} is not a string literal anywhere in paynow_service:"
        " the service does not log it (renamed?), so this filter would never match"
    )


def test_every_spec_log_message_is_covered() -> None:
    quoted = {value for _, field, value in _quoted_values() if field == "message"}
    spec = {
        "Webhook received",
        "Webhook processed successfully",
        "Worker processed event successfully",
        "Terminal failure - dead-lettered",
        "Transient failure - will retry",
        "Event already processed - skipping",
        "Stranded event re-published",
    }
    assert spec <= quoted


def test_a_renamed_message_would_be_caught() -> None:
    text = (
        'jsonPayload.component="paynow_worker" AND jsonPayload.message=("Worker received message" OR "Nope")'
    )
    values = [v for m in _VALUE.finditer(text) for v in _QUOTED.findall(m["rhs"])]
    assert values == ["paynow_worker", "Worker received message", "Nope"]
    assert "Nope" not in _source_literals()
    assert "Worker received message" in _source_literals()


@pytest.mark.parametrize(("where", "field"), _read_fields())
def test_extracted_or_compared_field_is_logged_by_the_service(where: str, field: str) -> None:
    assert field in _logged_field_names(), (
        f"{where}: reads jsonPayload.{field}, which no log call in paynow_service writes:"
        " the metric would stay empty"
    )


def _policy(name: str) -> dict[str, Any]:
    document = _load(MONITORING / "alerts" / f"{name}.json")
    assert isinstance(document, dict)
    return document


def _threshold(policy: dict[str, Any]) -> dict[str, Any]:
    (condition,) = policy["conditions"]
    threshold = condition["conditionThreshold"]
    assert isinstance(threshold, dict)
    return threshold


def test_dead_letter_share_alert_is_a_ratio_over_an_hour() -> None:
    threshold = _threshold(_policy("dlq-share"))
    assert "user/paynow_dead_lettered" in threshold["filter"]
    assert "user/paynow_events_settled" in threshold["denominatorFilter"]
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["thresholdValue"] == 0.01
    for aggregations in (threshold["aggregations"], threshold["denominatorAggregations"]):
        assert [(a["alignmentPeriod"], a["perSeriesAligner"]) for a in aggregations] == [
            ("3600s", "ALIGN_SUM")
        ]
    # The denominator counts every end an event can reach, on both paths, dead letters included.
    settled = _load(MONITORING / "metrics" / "paynow_events_settled.json")["filter"]
    dead = _load(MONITORING / "metrics" / "paynow_dead_lettered.json")["filter"]
    for needle in (
        "Worker processed event successfully",
        "Terminal failure - dead-lettered",
        '"failed_terminal"',
    ):
        assert needle in settled
    for needle in ("Terminal failure - dead-lettered", '"failed_terminal"'):
        assert needle in dead


@pytest.mark.parametrize(
    ("name", "metric", "value"),
    [
        ("webhook-latency", 'run.googleapis.com/request_latencies"', 50),
        ("publish-lag", "user/paynow_worker_publish_lag_ms", 5000),
    ],
)
def test_p95_alerts_have_the_design_ceilings(name: str, metric: str, value: int) -> None:
    threshold = _threshold(_policy(name))
    assert metric in threshold["filter"]
    (aggregation,) = threshold["aggregations"]
    assert aggregation["crossSeriesReducer"] == "REDUCE_PERCENTILE_95"
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["thresholdValue"] == value


def test_webhook_latency_alert_names_the_webhook_service() -> None:
    # deploy.sh renames service_name="paynow-webhook" to the deployed service in every alert.
    assert (
        'resource.label.service_name=\\"paynow-webhook\\"'
        in (MONITORING / "alerts" / "webhook-latency.json").read_text()
    )


def test_reconciliation_drift_alert_fires_on_any_drift() -> None:
    threshold = _threshold(_policy("reconciliation-drift"))
    assert "user/paynow_reconcile_drift" in threshold["filter"]
    assert (threshold["comparison"], threshold["thresholdValue"]) == ("COMPARISON_GT", 0)
    metric = _load(MONITORING / "metrics" / "paynow_reconcile_drift.json")
    assert 'jsonPayload.message="Reconciliation finished"' in metric["filter"]
    assert "jsonPayload.drift_count>0" in metric["filter"]


def test_test_alert_policy_matches_a_log_entry_and_closes_itself() -> None:
    policy = _policy("test-alert")
    (condition,) = policy["conditions"]
    assert condition["conditionMatchedLog"]["filter"].startswith('log_id("paynow-alert-test")')
    assert policy["alertStrategy"]["notificationRateLimit"]["period"]
    assert policy["alertStrategy"]["autoClose"]


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    assert "## Escalation" in runbook
    for path in sorted(MONITORING.glob("alerts/*.json")):
        policy = _load(path)
        assert "docs/runbook.md" in policy["documentation"]["content"], path.name
        short = policy["displayName"].removeprefix("paynow: ")
        assert short in runbook, f"{path.name}: the runbook says nothing of '{short}'"
