"""The package's arrows point one way, and no module imports itself back through others.

entrypoints -> service -> ports <- adapters; the domain imports only the domain. Every
module under paynow_service/ is parsed (never imported): an import inside a function
counts like any other (the load tool's lazy import is the one allowed exception to the
repository rule), an import under `if TYPE_CHECKING:` does not (it never runs). The
generated code (paynow_service/gen) is left out: it imports only protobuf and itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "paynow_service"
GENERATED = "paynow_service.gen"
LOAD_TOOL_COMMAND = "paynow_service.entrypoints.loadtest_cli"
REPOSITORY_ONLY = ("bench", "tests", "paynow_loadtest")  # not in the installed package


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported (`from a import b`: a.b when that is a module, else a)
    line: int
    lazy: bool  # inside a function


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
OWN = sorted(name for name in MODULES if not (name + ".").startswith(GENERATED + "."))


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            for statement in child.orelse:
                yield from _walk(ast.Module(body=[statement], type_ignores=[]), lazy)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, lazy
        yield from _walk(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node, lazy in _walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), False):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno, lazy) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parent, *([node.module] if node.module else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.append(Import(name, submodule if submodule in MODULES else base, node.lineno, lazy))
    return found


IMPORTS = {name: imports_of(name) for name in OWN}


def layer(module: str) -> str:
    """domain, service, adapters, entrypoints or gen; "" for the package's top-level modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "paynow_service" else ""


def _within(module: str, *roots: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def _violations(importer_layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{i.importer}:{i.line} imports {i.target}"
        for name in OWN
        if layer(name) == importer_layer
        for i in IMPORTS[name]
        if _within(i.target, *(f"paynow_service.{f}" for f in forbidden))
    ]


def test_the_parse_sees_the_package() -> None:
    # Guards the checks below: an empty graph would make every one of them vacuous.
    assert {"domain", "service", "adapters", "entrypoints"} <= {layer(name) for name in OWN}
    decide = {i.target for i in IMPORTS["paynow_service.service.decide"]}
    assert "paynow_service.domain.decisions" in decide
    assert "paynow_service.domain.events" in decide  # `from paynow_service.domain import events as ev`


def test_the_domain_imports_only_the_domain() -> None:
    found = [
        f"{i.importer}:{i.line} imports {i.target}"
        for name in OWN
        if layer(name) == "domain"
        for i in IMPORTS[name]
        if _within(i.target, "paynow_service") and layer(i.target) != "domain"
    ]
    assert found == []


def test_the_service_imports_no_adapter_and_no_entry_point() -> None:
    assert _violations("service", ("adapters", "entrypoints", "bootstrap")) == []


def test_adapters_import_no_service_and_no_entry_point() -> None:
    assert _violations("adapters", ("service", "entrypoints", "bootstrap")) == []


def test_nothing_imports_the_repository_only_code() -> None:
    found = [
        f"{i.importer}:{i.line} imports {i.target}"
        for name in OWN
        for i in IMPORTS[name]
        if _within(i.target, *REPOSITORY_ONLY) and not (name == LOAD_TOOL_COMMAND and i.lazy)
    ]
    assert found == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules() -> None:
    graph = {name: {i.target for i in IMPORTS[name] if i.target in IMPORTS} for name in OWN}
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, [["a"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected


def test_lazy_and_type_only_imports_are_told_apart() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import paynow_service.domain.events\n"
        "if TYPE_CHECKING:\n"
        "    from paynow_service.service import decide\n"
        "def f():\n"
        "    import bench.load\n"
    )
    found = [(node.lineno, lazy) for node, lazy in _walk(ast.parse(source), False) if node.lineno > 1]
    assert found == [(2, False), (6, True)]
