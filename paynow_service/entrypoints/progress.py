"""A progress line on stderr, at most every few seconds, for the long operator commands."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

PROGRESS_EVERY_S = 2.0


class Tallied(Protocol):
    def progress(self) -> str: ...


@dataclass
class Progress:
    """`tick(tally)` prints `{program}: {tally.progress()}` when `every_s` have passed since the last."""

    program: str
    every_s: float = PROGRESS_EVERY_S
    clock: Callable[[], float] = time.monotonic
    _last: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._last = self.clock()

    def tick(self, tally: Tallied) -> None:
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            print(f"{self.program}: {tally.progress()}", file=sys.stderr, flush=True)
