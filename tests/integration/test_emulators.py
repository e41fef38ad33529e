"""The emulator harness: readiness, reset, pause/resume and stop by PID."""

from __future__ import annotations

import os
import time

from google.api_core import exceptions as gexc
from google.cloud import firestore

from paynow_service.adapters.emulators import EmulatorStack, launch_emulator, wait_ready
from tests.conftest import PROJECT
from tests.support.stack import unique


def test_reset_empties_firestore(emulators: EmulatorStack) -> None:
    client = firestore.Client(project=PROJECT)
    ref = client.collection(unique("c")).document("d")
    ref.set({"x": 1})
    assert ref.get().exists
    emulators.firestore.reset_firestore()
    assert not ref.get().exists
    client.close()


def test_pause_hangs_calls_and_resume_keeps_state(emulators: EmulatorStack) -> None:
    client = firestore.Client(project=PROJECT)
    ref = client.collection(unique("c")).document("d")
    ref.set({"kept": True})
    emulators.firestore.pause()
    try:
        started = time.monotonic()
        try:
            snapshot = ref.get(timeout=1.5, retry=None)
            answered = f"answered (exists={snapshot.exists})"
        except (gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.RetryError):
            answered = ""
        assert not answered, f"a call to a paused emulator must time out, it was {answered}"
        assert time.monotonic() - started < 10
    finally:
        emulators.firestore.resume()
    assert ref.get(timeout=10).to_dict() == {"kept": True}
    client.close()


def test_stop_leaves_no_process(tmp_path: object, emulators: EmulatorStack) -> None:
    emulator = wait_ready(launch_emulator("pubsub", project=PROJECT))
    pid = emulator.pid
    emulator.stop()
    assert emulator.process.poll() is not None
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
