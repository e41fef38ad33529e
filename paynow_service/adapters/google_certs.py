"""Google's OIDC signing certs, kept fresh off the request path (SPEC 6).

`GoogleCerts` fetches the certs in a background task (`start`, or the first `keys_for`):
ahead of the end of the max-age Google gives them, and after a failure again only once an
exponential back-off with jitter has run out, meanwhile serving the last good keys. A
request never starts a fetch, except that a token naming an unknown key id may trigger one
refresh a minute, never during a back-off (keys rotate, but a stream of forged kids must
not make us hammer the certs URL). Each fetch is bounded and runs in a thread (it blocks).
Without keys, `ready()` stays true for a grace period after start and then turns false, so
a cold instance that cannot reach Google reports not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import google.auth.transport

from paynow_service import metrics
from paynow_service.domain.errors import CertsUnavailableError
from paynow_service.logs import log

_DEFAULT_TTL_S = 3600.0
_MAX_AGE = re.compile(r"max-age=(\d+)")
_MAX_BACKOFF_DOUBLINGS = 30  # past this the cap has long been reached; keeps 2**n a small float
logger = logging.getLogger("paynow_service.oidc")
COMPONENT = "oidc"


@dataclass(frozen=True)
class CertsTimings:
    """When the signing certs are fetched; the defaults are production's, tests pass short ones."""

    fetch_timeout_s: float = 5.0
    # Refresh at a random point in this share of the max-age: early enough that a failed
    # refresh still has fresh keys to serve, spread so that instances do not fetch together.
    refresh_ahead: tuple[float, float] = (0.8, 0.9)
    # Bounds on the max-age the certs URL announces (a max-age of 0 must not mean a loop).
    min_max_age_s: float = 60.0
    max_max_age_s: float = 86400.0
    backoff_first_s: float = 5.0
    backoff_cap_s: float = 300.0
    backoff_jitter: float = 0.2  # each back-off is shortened by up to this share, at random
    unknown_kid_interval_s: float = 60.0
    grace_s: float = 30.0
    # The longest a request waits on a fetch: the start-up one (a fresh instance's first pushes
    # then pass) or one for an unknown kid. Without keys after a failed fetch: no wait at all.
    request_wait_s: float = 1.0

    def backoff_s(self, failures: int) -> float:
        """The wait before the next attempt after `failures` failed fetches in a row."""
        doublings = min(failures - 1, _MAX_BACKOFF_DOUBLINGS)
        full = min(self.backoff_cap_s, self.backoff_first_s * 2.0**doublings)
        return full * (1 - self.backoff_jitter * random.random())  # noqa: S311 (jitter, not a secret)

    def refresh_after_s(self, max_age_s: float) -> float:
        low, high = self.refresh_ahead
        return max_age_s * random.uniform(low, high)  # noqa: S311 (jitter, not a secret)


class GoogleCerts:
    """The signing certs of one certs URL: {kid: PEM}, refreshed in the background."""

    def __init__(self, certs_url: str, request: google.auth.transport.Request, timings: CertsTimings) -> None:
        self._certs_url = certs_url
        self._request = request
        self._timings = timings
        self._certs: Mapping[str, str] = {}
        self._started_at = time.monotonic()
        self._failures = 0  # failed fetches in a row: > 0 means a back-off runs until _next_fetch_at
        self._next_fetch_at = 0.0  # when the refresher fetches next (ahead of expiry, or back-off end)
        self._last_attempt_at = float("-inf")
        self._fetch_task: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # set when a fetch moved _next_fetch_at

    @property
    def failed_fetches(self) -> int:
        """Failed fetches in a row (0 once a fetch succeeds)."""
        return self._failures

    def start(self) -> None:
        """Start fetching the certs in the background now (at start-up; `keys_for` also calls it,
        so certs nobody started still get their refresher). Idempotent."""
        if _running(self._refresher):
            return
        self._wake = asyncio.Event()
        if self._next_fetch_at <= time.monotonic():
            self._begin_fetch()  # before the first request, which then finds it in flight
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_forever(), name="oidc-certs-refresher"
        )

    async def aclose(self) -> None:
        """Stop the background refresher (and a fetch in flight; its thread ends at its timeout)."""
        tasks = [t for t in (self._refresher, self._fetch_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._refresher = self._fetch_task = None

    def ready(self) -> bool:
        """True with keys, or without them for the grace after they were set up (at start-up); then false."""
        return bool(self._certs) or time.monotonic() - self._started_at < self._timings.grace_s

    async def keys_for(self, kid: str | None) -> Mapping[str, str]:
        self.start()
        if not self._certs:
            await self._wait_for_first_keys()
        elif kid is not None and kid not in self._certs:
            await self._refresh_for_unknown_kid()
        # Stale or not: Google's certs outlive their max-age by days, and a stale copy beats
        # refusing everyone while the certs URL fails (the refresher keeps trying).
        return self._certs

    async def _wait_for_first_keys(self) -> None:
        fetch = self._fetch_task
        if self._failures == 0 and fetch is not None and not fetch.done():
            await asyncio.wait({fetch}, timeout=self._timings.request_wait_s)
        if not self._certs:
            raise CertsUnavailableError("the signing certs are not available yet")

    async def _refresh_for_unknown_kid(self) -> None:
        fetch = self._fetch_task
        if fetch is None or fetch.done():
            now = time.monotonic()
            if self._in_backoff(now) or now - self._last_attempt_at < self._timings.unknown_kid_interval_s:
                return
            fetch = self._begin_fetch()
        await asyncio.wait({fetch}, timeout=self._timings.request_wait_s)

    def _in_backoff(self, now: float) -> bool:
        return self._failures > 0 and now < self._next_fetch_at

    def _begin_fetch(self) -> asyncio.Task[None]:
        """The fetch in flight, or a new one: never two at a time, whoever asks."""
        if not _running(self._fetch_task):
            self._fetch_task = asyncio.get_running_loop().create_task(
                self._fetch_once(), name="oidc-certs-fetch"
            )
        assert self._fetch_task is not None
        return self._fetch_task

    async def _refresh_forever(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            delay = self._next_fetch_at - time.monotonic()
            if delay <= 0:
                await asyncio.wait({self._begin_fetch()})
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)

    async def _fetch_once(self) -> None:
        self._last_attempt_at = time.monotonic()
        try:
            # wait_for bounds the whole fetch: the transport's timeout is per socket operation.
            certs, max_age = await asyncio.wait_for(
                asyncio.to_thread(self._fetch), timeout=self._timings.fetch_timeout_s
            )
        except Exception as err:  # noqa: BLE001 (whatever the certs URL does: back off, keep the keys)
            self._fetch_failed(err)
        else:
            self._fetch_succeeded(certs, max_age)
        finally:
            if self._wake is not None:
                self._wake.set()

    def _fetch_succeeded(self, certs: Mapping[str, str], max_age_s: float) -> None:
        metrics.OIDC_CERTS_FETCHES.labels("ok").inc()
        if self._failures:
            log(
                logger,
                logging.INFO,
                "Signing certs fetched again",
                component=COMPONENT,
                certs_url=self._certs_url,
                failed_fetches=self._failures,
            )
        self._certs, self._failures = certs, 0
        self._next_fetch_at = time.monotonic() + self._timings.refresh_after_s(max_age_s)

    def _fetch_failed(self, err: BaseException) -> None:
        metrics.OIDC_CERTS_FETCHES.labels("error").inc()
        self._failures += 1
        retry_in_s = self._timings.backoff_s(self._failures)
        self._next_fetch_at = time.monotonic() + retry_in_s
        log(
            logger,
            logging.WARNING,
            "Signing certs fetch failed - serving the last good keys"
            if self._certs
            else "Signing certs fetch failed - no keys yet",
            component=COMPONENT,
            certs_url=self._certs_url,
            failed_fetches=self._failures,
            retry_in_s=round(retry_in_s, 1),
            reason=_fetch_error(err, self._timings.fetch_timeout_s),
        )

    def _fetch(self) -> tuple[dict[str, str], float]:
        timings = self._timings
        response = self._request(url=self._certs_url, method="GET", timeout=timings.fetch_timeout_s)
        if response.status != 200:
            raise ValueError(f"the certs URL answered {response.status}")
        data = json.loads(response.data)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("the certs URL did not answer {kid: PEM}")
        headers = {str(k).lower(): str(v) for k, v in (response.headers or {}).items()}
        match = _MAX_AGE.search(headers.get("cache-control", ""))
        max_age = float(match.group(1)) if match else _DEFAULT_TTL_S
        certs = {str(k): v for k, v in data.items()}
        return certs, min(max(max_age, timings.min_max_age_s), timings.max_max_age_s)


def _running(task: asyncio.Task[None] | None) -> bool:
    # A task of another (closed) loop does not count: tests run verifiers on several loops.
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()


def _fetch_error(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, TimeoutError):  # says nothing by itself: a hanging certs URL
        return f"no answer within {timeout_s:g} s"
    return first_line(err)


def first_line(err: BaseException) -> str:
    # Messages from google-auth may quote claims; keep them short and single-line for logs.
    return (str(err).splitlines() or [type(err).__name__])[0][:160]
