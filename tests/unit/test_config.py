"""Settings: defaults, one-line errors naming the variable, and the README's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from paynow_service.config import VARIABLES, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_spec() -> None:
    s = Settings.from_env({})
    assert s.webhook_mode == "sync"
    assert s.webhook_queue_percent == 100
    assert s.port == 8080
    assert s.grpc_port == 50051
    assert s.http_routes == ("webhook",)  # the public service's routes: never /metrics or PointsService
    assert s.paynow_timestamp_tolerance_s == 300
    assert s.paynow_max_body_bytes == 262144
    assert (s.pubsub_topic, s.pubsub_dlq_topic) == ("paynow-events", "paynow-events-dlq")
    assert (s.pubsub_subscription, s.pubsub_dlq_subscription) == (
        "paynow-events-sub",
        "paynow-events-dlq-sub",
    )
    assert s.publish_lease_s == 30
    assert s.webhook_event_ttl_days == 30
    assert s.allow_negative_balance is True
    assert s.push_auth == "enabled"
    assert s.points_auth == "enabled"


def test_every_variable_has_a_settings_field() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {v.attr for v in VARIABLES} == fields
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


def test_settings_defaults_are_the_tables() -> None:
    # Each default is written once, in VARIABLES: the dataclass takes it from there.
    defaults = Settings()
    for var in VARIABLES:
        assert getattr(defaults, var.attr) == var.parse(var.name, var.default), var.name
    assert Settings.from_env({}) == defaults


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WEBHOOK_MODE", "fast", "sync | queue"),
        ("WEBHOOK_QUEUE_PERCENT", "101", "0..100"),
        ("WEBHOOK_QUEUE_PERCENT", "half", "0..100"),
        ("PORT", "0", "1..65535"),
        ("HTTP_ROUTES", "webhook,admin", "webhook, push, points, metrics"),
        ("ALLOW_NEGATIVE_BALANCE", "maybe", "true | false"),
        ("PUSH_AUTH", "off", "enabled | disabled"),
        ("PUBSUB_TOPIC", "x", "Pub/Sub id"),
        ("PUBSUB_EMULATOR_HOST", "nohostport", "host:port"),
        ("LOG_LEVEL", "loud", "debug | info | warning | error"),
        ("PUSH_CERTS_URL", "file:///etc/passwd", "http(s) URL"),
        ("PUSH_CERTS_URL", "http://www.googleapis.com/oauth2/v1/certs", "an https URL"),
        ("POINTS_CERTS_URL", "http://127.0.0.1:9/certs", "an https URL"),  # loopback: emulators only
        ("PRODUCT_CATALOG", "/nonexistent/catalog.toml", "readable file"),
    ],
)
def test_bad_value_names_variable_and_allowed_values(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message
    assert expected in message
    assert "\n" not in message


def test_first_bad_variable_is_reported_before_later_ones() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_MODE"):
        Settings.from_env({"WEBHOOK_MODE": "fast", "PORT": "nope"})


EMULATORS = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"}


@pytest.mark.parametrize("auth", ["PUSH_AUTH", "POINTS_AUTH"])
@pytest.mark.parametrize("missing", ["PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"])
def test_a_disabled_auth_needs_both_emulator_hosts(auth: str, missing: str) -> None:
    # With one emulator only, the other client would reach real GCP behind an open endpoint.
    env = {auth: "disabled", **{k: v for k, v in EMULATORS.items() if k != missing}}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert message.startswith(f"{auth}=disabled")
    assert f"{missing} is not set" in message
    assert "\n" not in message


def test_auth_can_be_disabled_on_both_emulators_and_then_listens_on_loopback() -> None:
    ok = Settings.from_env({"PUSH_AUTH": "disabled", "POINTS_AUTH": "disabled", **EMULATORS})
    assert (ok.push_auth, ok.points_auth) == ("disabled", "disabled")
    assert ok.disabled_auths == ("PUSH_AUTH", "POINTS_AUTH")
    assert ok.listen_host == "127.0.0.1"
    assert Settings.from_env({"POINTS_AUTH": "disabled", **EMULATORS}).listen_host == "127.0.0.1"
    enabled = Settings.from_env(EMULATORS)
    assert (enabled.disabled_auths, enabled.listen_host) == ((), "0.0.0.0")


@pytest.mark.parametrize("name", ["PUSH_CERTS_URL", "POINTS_CERTS_URL"])
def test_certs_url_is_https_unless_a_loopback_server_on_both_emulators(name: str) -> None:
    assert getattr(Settings.from_env({}), name.lower()).startswith("https://")
    for url in ("http://127.0.0.1:8123/certs", "http://localhost:8123/certs"):
        assert getattr(Settings.from_env({name: url, **EMULATORS}), name.lower()) == url
        with pytest.raises(ConfigError, match=f"^{name}="):  # one emulator is not enough
            Settings.from_env({name: url, "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})
    with pytest.raises(ConfigError, match=f"^{name}=.*is not allowed: an https URL"):
        Settings.from_env({name: "http://certs.example.com/certs", **EMULATORS})


def test_secrets_are_a_comma_list() -> None:
    s = Settings.from_env({"PAYNOW_WEBHOOK_SECRETS": " pn-a , pn-b,,"})
    assert s.paynow_webhook_secrets == ("pn-a", "pn-b")


def test_require_names_the_missing_variable() -> None:
    with pytest.raises(ConfigError, match="PAYNOW_WEBHOOK_SECRETS is required"):
        Settings.from_env({}).require("PAYNOW_WEBHOOK_SECRETS")


def test_readme_table_matches_the_code() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("env_table", ROOT / "scripts" / "env_table.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert module.table() in readme, "README's variable table is stale: paste `python scripts/env_table.py`"
