"""The unary pull worker's own hold-back of a transiently failed message (the emulator ignores backoff)."""

from __future__ import annotations

import pytest

from paynow_service.entrypoints.ordered_pull import RETRY_DELAY_CAP_S, retry_delay_s


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(None, 1), (0, 1), (1, 1), (2, 2), (9, 9), (10, 10), (11, 10), (100, 10)]
)
def test_retry_delay_grows_per_attempt_up_to_the_cap(attempt: int | None, seconds: int) -> None:
    assert retry_delay_s(attempt) == seconds


def test_a_full_budget_outlasts_the_emulators_lock_expiry() -> None:
    # 100 attempts (the largest budget Pub/Sub allows) must span well over the ~60 s a killed
    # worker's transaction keeps its locks on the emulator.
    assert sum(retry_delay_s(a) for a in range(1, 101)) > 10 * 60
    assert RETRY_DELAY_CAP_S <= 10  # never longer than a real subscription's minimum backoff
