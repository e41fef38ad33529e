"""The worker's success line carries `publish_lag_ms`: Pub/Sub's publish time to processed."""

from __future__ import annotations

import datetime as dt

import pytest

from paynow_service.entrypoints.message_handler import publish_lag_ms
from paynow_service.entrypoints.push import _publish_time


def test_the_lag_is_the_time_since_the_publish() -> None:
    lag = publish_lag_ms(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1.5))
    assert lag is not None
    assert 1500 <= lag < 2500


@pytest.mark.parametrize("published", [None, dt.datetime(2026, 1, 1)])
def test_no_lag_without_an_instant(published: dt.datetime | None) -> None:
    assert publish_lag_ms(published) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("2026-01-01T00:00:00.123Z", dt.datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=dt.UTC)),
        ("2026-01-01T00:00:00.123456789Z", dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC)),
        ("2026-01-01T00:00:00", None),  # no zone: no instant
        ("yesterday", None),
        (1767225600, None),
    ],
)
def test_a_push_envelopes_publish_time(value: object, expected: dt.datetime | None) -> None:
    assert _publish_time({"publishTime": value}) == expected
    assert _publish_time({}) is None
