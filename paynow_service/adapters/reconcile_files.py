"""`reconcile`'s files in `--out`, and the dead-letter queue's age.

Findings stream to `reconcile-{report_id}.findings.jsonl` as they are found (one JSON object a
line, ids only); a checkpoint records the file's length, and a resumed run cuts the file back
to it, so findings written after the last checkpoint of a killed run are not listed twice.
The JSON report is written from it line by line (`findings` last), never all in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.auth.exceptions import GoogleAuthError

from paynow_service.adapters.dead_letter_queue import DeadLetterQueue
from paynow_service.config import Settings
from paynow_service.domain.reconcile_findings import Finding

DLQ_READ_LIMIT = 1000


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


class FindingsFile:
    """The findings of one report, appended as they are found."""

    def __init__(self, out_dir: Path, report_id: str, *, resume_at: int | None = None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / f"reconcile-{report_id}.findings.jsonl"
        if resume_at is None or not self.path.exists():
            self.path.write_bytes(b"")
        else:
            with self.path.open("r+b") as handle:
                handle.truncate(min(resume_at, self.path.stat().st_size))
        self._handle = self.path.open("ab")

    def write(self, finding: Finding) -> None:
        self._handle.write((_json(finding.to_map()) + "\n").encode("utf-8"))

    def flush(self) -> int:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()

    def read(self) -> Iterator[Finding]:
        """Every finding written, in order (one line at a time)."""
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield Finding.from_map(json.loads(line))


def write_reports(
    out_dir: Path, report_id: str, header: Mapping[str, Any], findings: FindingsFile, markdown: str
) -> tuple[Path, Path]:
    """`reconcile-{report_id}.json` (the header's fields, then `findings`) and `.md`."""
    json_path = out_dir / f"reconcile-{report_id}.json"
    md_path = out_dir / f"reconcile-{report_id}.md"
    with json_path.open("w", encoding="utf-8") as out:
        out.write(_json(dict(header))[:-1] + ',"findings":[')
        for index, finding in enumerate(findings.read()):
            out.write(("," if index else "") + "\n" + _json(finding.to_map()))
        out.write("\n]}\n")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


class DeadLetterAge:
    """How many letters wait on the DLQ subscription and how old the oldest is (nothing consumed:
    what is pulled is released at once, as `dlq list` does)."""

    def __init__(self, settings: Settings, limit: int = DLQ_READ_LIMIT) -> None:
        self._settings = settings
        self._limit = limit

    def _read(self) -> dict[str, Any]:
        queue = DeadLetterQueue(self._settings)
        try:
            letters = queue.read(self._limit)
        finally:
            queue.close()
        ages = [letter.age_s for letter in letters]
        return {
            "available": True,
            "subscription": self._settings.pubsub_dlq_subscription,
            "count": len(letters),
            "countCapped": len(letters) >= self._limit,
            "oldestAgeS": max(ages) if ages else 0,
            "readAt": dt.datetime.now(dt.UTC).isoformat(),
        }

    async def oldest(self) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self._read)
        except (gexc.GoogleAPIError, GoogleAuthError, OSError, ValueError) as err:
            detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            return {"available": False, "error": f"{type(err).__name__}: {detail}"}
