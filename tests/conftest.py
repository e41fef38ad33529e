"""Shared fixtures: the real Pub/Sub and Firestore emulators, started once per session.

Tests that need them take the `emulators` fixture (directly or through another
fixture); where gcloud is absent they are skipped with one line saying so. Every test
uses random ids, and `firestore_reset` empties Firestore for tests that need a blank slate.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from paynow_service.adapters.emulators import EmulatorError, EmulatorStack, sdk_root
from paynow_service.config import Settings
from tests.support.stack import stack_env

PROJECT = "paynow-test"


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorStack]:
    if sdk_root() is None:
        pytest.skip("gcloud SDK not installed: Pub/Sub and Firestore emulator tests skipped")
    try:
        stack = EmulatorStack.start(project=PROJECT, log_dir=tmp_path_factory.mktemp("emulators"))
    except EmulatorError as err:
        pytest.fail(f"emulators did not start: {err}")
    saved = {k: os.environ.get(k) for k in stack.env()}
    os.environ.update(stack.env())
    try:
        yield stack
    finally:
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def firestore_reset(emulators: EmulatorStack) -> EmulatorStack:
    """Empty the Firestore emulator before the test."""
    emulators.firestore.reset_firestore()
    return emulators


@pytest.fixture
def emulator_settings(emulators: EmulatorStack) -> Settings:
    """Settings on the emulators with topic and subscription ids unique to the test."""
    return Settings.from_env(stack_env(emulators.env()))
