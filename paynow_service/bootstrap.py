"""The composition root: builds the adapters from Settings and hands them to the services.

Nothing happens at import time. Every adapter is built here and only here, so a test
can pass fakes to the services and the CLI can point everything at the emulators.
"""

from __future__ import annotations

from google.cloud import firestore

from paynow_service.config import Settings


def firestore_client(settings: Settings) -> firestore.AsyncClient:
    """The process's Firestore client (the emulator when FIRESTORE_EMULATOR_HOST is set)."""
    return firestore.AsyncClient(project=settings.google_cloud_project)
