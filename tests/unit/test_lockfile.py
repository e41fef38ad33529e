"""The hash-locked requirements agree with pyproject.toml, and every install goes through them.

requirements-dev.lock (runtime + the `dev` extra + the build backend) is what `make` and CI
install, requirements.lock (runtime + the build backend) what the Dockerfile installs; both are
written by `make lock` (uv). Offline and fast: these tests read files only.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
DOCKERFILE = ROOT / "Dockerfile"
MAKEFILE = ROOT / "Makefile"

PROJECT_NAME = canonicalize_name(PYPROJECT["project"]["name"])
# uv's "# via" annotation for a requirement pyproject.toml declares itself.
PYPROJECT_SOURCE = f"{PYPROJECT['project']['name']} (pyproject.toml)"
SHA256 = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: frozenset[str]
    via: frozenset[str]


def _entries(path: Path) -> list[tuple[str, list[str]]]:
    """A lock file as (requirement with its options, comment lines after it) per entry."""
    entries: list[tuple[str, list[str]]] = []
    current: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if entries and not current:
                entries[-1][1].append(line.lstrip("#").strip())
            continue
        current.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            entries.append((" ".join(current), []))
            current = []
    assert not current, f"{path.name}: ends inside a continued line"
    return entries


def _via(comments: list[str]) -> frozenset[str]:
    sources: set[str] = set()
    in_via = False
    for comment in comments:
        if comment == "via":
            in_via = True
        elif comment.startswith("via "):
            sources.add(comment.removeprefix("via ").strip())
            in_via = False
        elif in_via:
            sources.add(comment)
    return frozenset(sources)


def parse_lock(path: Path) -> dict[str, list[Pin]]:
    """Every entry of a lock, checked to be `name==version` with sha256 hashes and nothing else."""
    pins: dict[str, list[Pin]] = {}
    for text, comments in _entries(path):
        assert not text.startswith("-"), f"{path.name}: an option line, not a pinned requirement: {text!r}"
        requirement_text, _, options = text.partition(" --")
        options = "--" + options if options else ""
        hashes = frozenset(SHA256.findall(options))
        leftover = SHA256.sub("", options).strip()
        assert not leftover, (
            f"{path.name}: {requirement_text!r} carries options other than hashes: {leftover!r}"
        )
        assert hashes, f"{path.name}: {requirement_text!r} has no --hash=sha256"
        req = Requirement(requirement_text)
        assert req.url is None, f"{path.name}: {req.name} is a URL requirement"
        specs = list(req.specifier)
        unpinned = f"{path.name}: {requirement_text!r} is not pinned with a single =="
        assert len(specs) == 1, unpinned
        assert specs[0].operator == "==", unpinned
        assert "*" not in specs[0].version, unpinned
        name = canonicalize_name(req.name)
        pins.setdefault(name, []).append(Pin(name, specs[0].version, req.marker, hashes, _via(comments)))
    return pins


LOCK_NAMES = ("requirements.lock", "requirements-dev.lock")


@functools.cache
def lock(name: str) -> dict[str, list[Pin]]:
    return parse_lock(ROOT / name)


def _declared(*, dev: bool) -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]
    if dev:
        texts += project["optional-dependencies"]["dev"]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize("lock_name", LOCK_NAMES)
def test_every_lock_entry_is_pinned_with_hashes(lock_name: str) -> None:
    pins = lock(lock_name)  # parse_lock refuses anything unpinned or unhashed
    assert len(pins) > 10, f"{lock_name} looks empty"
    assert PROJECT_NAME not in pins, f"{lock_name} must not pin the project itself (installed --no-deps)"
    for name, entries in pins.items():
        markers = [str(pin.marker) for pin in entries]
        assert len(set(markers)) == len(markers), f"{lock_name}: {name} pinned twice for the same environment"
        for pin in entries:
            Version(pin.version)  # a real version, not a wildcard or a local path


def test_lock_files_were_written_by_make_lock() -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK):
        head = path.read_text(encoding="utf-8").splitlines()[:2]
        assert head == ["# This file was autogenerated by uv via the following command:", "#    make lock"], (
            f"{path.name}: regenerate it with `make lock`, do not edit it by hand"
        )


@pytest.mark.parametrize(
    ("lock_name", "dev"), [("requirements.lock", False), ("requirements-dev.lock", True)]
)
def test_every_declared_dependency_is_pinned_within_its_range(lock_name: str, dev: bool) -> None:
    pins = lock(lock_name)
    problems: list[str] = []
    for req in _declared(dev=dev):
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in {lock_name}")
            continue
        for pin in pins[name]:
            if not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{lock_name} pins {name}=={pin.version}, outside pyproject's {req}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("lock_name", "dev"), [("requirements.lock", False), ("requirements-dev.lock", True)]
)
def test_lock_holds_no_top_level_package_pyproject_dropped(lock_name: str, dev: bool) -> None:
    declared = {canonicalize_name(req.name) for req in _declared(dev=dev)}
    # What uv says an entry is there for: pyproject itself, or (runtime lock) the dev lock it is
    # constrained to. An entry there only for those reasons must still be declared.
    own_sources = {PYPROJECT_SOURCE, "-c requirements-dev.lock"}
    stale = [
        name
        for name, entries in lock(lock_name).items()
        if name not in declared and all(pin.via <= own_sources for pin in entries)
    ]
    assert not stale, (
        f"{lock_name} still pins {stale}, which pyproject.toml no longer asks for: run `make lock`"
    )


def test_runtime_lock_is_the_dev_lock_for_the_runtime() -> None:
    """The image installs exactly the files the tests ran against: same versions, same hashes."""
    problems: list[str] = []
    for name, entries in lock("requirements.lock").items():
        dev_versions = {pin.version: pin.hashes for pin in lock("requirements-dev.lock").get(name, [])}
        for pin in entries:
            if pin.version not in dev_versions:
                problems.append(f"{name}=={pin.version} is not in requirements-dev.lock")
            elif dev_versions[pin.version] != pin.hashes:
                problems.append(f"{name}=={pin.version} has other hashes in requirements-dev.lock")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_lock_tool_is_pinned_in_pyproject_and_the_dev_lock() -> None:
    uv = next(req for req in _declared(dev=True) if canonicalize_name(req.name) == "uv")
    (spec,) = uv.specifier
    assert spec.operator == "==", "the lock tool is pinned exactly in the dev extra"
    assert [pin.version for pin in lock("requirements-dev.lock")["uv"]] == [spec.version]


def _make_recipe(target: str) -> str:
    text = MAKEFILE.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, flags=re.MULTILINE)
    assert match, f"Makefile has no {target} recipe"
    return match.group(1)


def test_make_installs_from_the_dev_lock_only() -> None:
    recipe = _make_recipe("$(STAMP)")
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert installs, "the install recipe runs pip install"
    assert "--require-hashes -r requirements-dev.lock" in installs[0]
    for line in installs[1:]:
        assert "--no-deps" in line, f"only the lock brings dependencies: {line.strip()}"
    assert "--upgrade pip" not in recipe, "no unpinned download of pip"
    assert re.search(
        r"^\$\(STAMP\):.*\brequirements-dev\.lock\b", MAKEFILE.read_text(encoding="utf-8"), re.M
    ), "a changed lock reinstalls the venv"


def test_make_lock_regenerates_both_locks_with_hashes() -> None:
    recipe = _make_recipe("lock")
    assert "-o requirements-dev.lock" in recipe
    assert "-o requirements.lock" in recipe
    text = MAKEFILE.read_text(encoding="utf-8")
    assert "--generate-hashes" in text
    assert "--custom-compile-command 'make lock'" in text


def _dockerfile_images() -> list[str]:
    """The images the Dockerfile's FROM lines name, with ARG defaults substituted."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    stages: set[str] = set()
    images: list[str] = []
    for ref, alias in re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I):
        resolved = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], ref)
        if resolved not in stages:
            images.append(resolved)
        if alias:
            stages.add(alias)
    return images


def test_dockerfile_base_image_is_pinned_by_version_and_digest() -> None:
    images = _dockerfile_images()
    assert images, "the Dockerfile has FROM lines"
    pinned = re.compile(r"^python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+@sha256:[0-9a-f]{64}$")
    for image in images:
        match = pinned.match(image)
        assert match, f"FROM {image}: pin python:X.Y.Z-slim-<debian>@sha256:<digest>"
        minor = f"{match.group(1)}.{match.group(2)}"
        lock_python = re.search(r"^LOCK_PYTHON\s*:?=\s*(\S+)", MAKEFILE.read_text(encoding="utf-8"), re.M)
        assert lock_python, "the Makefile names the Python the locks are resolved for (LOCK_PYTHON)"
        assert lock_python.group(1) == minor, (
            f"the image's Python {minor} is the one the locks are resolved for (Makefile LOCK_PYTHON)"
        )
        assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(".".join(match.groups()))


def test_dockerfile_installs_from_the_runtime_lock_only() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^COPY\s+requirements\.lock\s", text, flags=re.MULTILINE)
    commands = re.sub(r"\\\n", " ", text)
    installs = re.findall(r"pip install[^&\n]*", commands)
    assert any("--require-hashes -r requirements.lock" in line for line in installs)
    for line in installs:
        assert "--require-hashes -r requirements.lock" in line or "--no-deps" in line, (
            f"only the lock brings dependencies into the image: {line.strip()}"
        )
    for line in re.findall(r"pip wheel[^&\n]*", commands):
        why = f"the project's wheel is built by the locked backend, fetching nothing: {line.strip()}"
        assert "--no-deps" in line, why
        assert "--no-build-isolation" in line, why
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "!requirements.lock" in ignore, ".dockerignore lets requirements.lock into the build context"
