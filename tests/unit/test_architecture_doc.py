"""docs/architecture.md and the README's "Where things are" table name real files and functions.

Every backticked path must exist; where a path is followed by a backticked name (`Class`,
`function`, `Class.method`, a table), each part must be defined in that file. A rename that
forgets the documentation fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "architecture.md", ROOT / "README.md"]
PATH = re.compile(r"`((?:[\w.-]+/)+[\w.-]*)`")
NAMED = re.compile(r"`((?:[\w.-]+/)+[\w-]+\.py)`\s+`([\w.]+)`")


def _paths(text: str) -> set[str]:
    return {match.group(1) for match in PATH.finditer(text)}


def _defined(source: str, name: str) -> bool:
    pattern = rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
    return re.search(pattern, source, flags=re.MULTILINE) is not None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_named_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    if doc.name == "README.md":  # the table of where things are, not the whole README
        text = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    missing = sorted(p for p in _paths(text) if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_every_function_named_in_the_route_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").replace("\n", " ")
    named = NAMED.findall(text)
    assert len(named) >= 15, "the route of a webhook and of a push message names its functions"
    missing = []
    for path, name in named:
        source = (ROOT / path).read_text(encoding="utf-8")
        missing += [f"{path}: {part}" for part in name.split(".") if not _defined(source, part)]
    assert not missing, f"docs/architecture.md names what is not there: {missing}"
