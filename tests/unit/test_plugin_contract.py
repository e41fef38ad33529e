"""The plugin contract stays whole: every hook is documented, tested and specified.

Adding a hook to `PayNowHookSpecs` without a docstring, a `## <hook>` section in
docs/plugins.md or a test named after it in tests/unit/test_hooks.py fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
import types
from importlib.metadata import entry_points
from pathlib import Path

import pluggy
import pytest

from paynow_service import hookimpl
from paynow_service.hookspecs import PROJECT, PayNowHookSpecs
from paynow_service.plugins import ENTRY_POINT_GROUP, get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
HOOK_TESTS = ROOT / "tests" / "unit" / "test_hooks.py"
HOOKS = sorted(name for name in vars(PayNowHookSpecs) if name.startswith("paynow_"))
BUILT_INS = {
    "catalog_orders": "paynow_catalog.orders",
    "catalog_subscriptions": "paynow_catalog.subscriptions",
}


def _test_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    ]


def test_the_contract_has_hooks() -> None:
    # Guards the introspection itself: an empty list would make every check below vacuous.
    assert len(HOOKS) >= 4
    assert set(HOOKS) == {name for name in dir(get_plugin_manager().hook) if name.startswith("paynow_")}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_in_the_plugin_guide(hook: str) -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(hook)}\s*$", guide, re.M), f"docs/plugins.md lacks '## {hook}'"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_named_after_it(hook: str) -> None:
    names = _test_names(HOOK_TESTS)
    assert any(hook in name for name in names), f"no test in test_hooks.py has {hook!r} in its name"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_docstring_saying_what_to_return(hook: str) -> None:
    spec = getattr(PayNowHookSpecs, hook)
    doc = inspect.getdoc(spec)
    assert doc, f"{hook} has no docstring"
    assert "return" in doc.lower(), f"{hook}'s docstring does not say what to return"
    assert getattr(spec, f"{PROJECT}_spec", None) is not None, f"{hook} is not marked @hookspec"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_firstresult_hookspec_says_so(hook: str) -> None:
    spec = getattr(PayNowHookSpecs, hook)
    if getattr(spec, f"{PROJECT}_spec")["firstresult"]:
        doc = " ".join((inspect.getdoc(spec) or "").split())
        assert "first non-None result" in doc, f"{hook} is firstresult but its docstring does not say so"


def test_built_in_plugins_are_declared_as_entry_points() -> None:
    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert {name: declared.get(name) for name in BUILT_INS} == BUILT_INS


def test_plugin_manager_loads_the_built_ins_through_entry_points() -> None:
    manager = get_plugin_manager()
    by_name = dict(manager.list_name_plugin())
    for name, module in BUILT_INS.items():
        plugin = by_name.get(name)
        assert isinstance(plugin, types.ModuleType), f"{name} is not registered"
        assert plugin.__name__ == module
    # Registered by load_setuptools_entrypoints, which records the distribution.
    from_dists = {getattr(plugin, "__name__", "") for plugin, _dist in manager.list_plugin_distinfo()}
    assert set(BUILT_INS.values()) <= from_dists


def test_built_in_hookimpls_are_trylast_so_outside_plugins_win() -> None:
    manager = get_plugin_manager()
    built_ins = {plugin for name, plugin in manager.list_name_plugin() if name in BUILT_INS}
    impls = [
        impl
        for hook in HOOKS
        for impl in getattr(manager.hook, hook).get_hookimpls()
        if impl.plugin in built_ins
    ]
    assert impls  # the built-ins implement at least the mapping hooks
    assert all(impl.trylast for impl in impls), [impl.function.__qualname__ for impl in impls]


def test_check_pending_passes_for_the_installed_plugins() -> None:
    get_plugin_manager().check_pending()


def test_misspelt_hook_in_a_plugin_fails_at_start() -> None:
    plugin = types.ModuleType("typo_plugin")

    @hookimpl
    def paynow_map_order_lines() -> None:  # one letter too many
        return None

    plugin.paynow_map_order_lines = paynow_map_order_lines  # type: ignore[attr-defined]
    with pytest.raises(pluggy.PluginValidationError, match="paynow_map_order_lines"):
        get_plugin_manager(extra_plugins=[plugin])


def test_hookimpl_with_an_unknown_argument_is_refused() -> None:
    class WrongArgument:
        @hookimpl
        def paynow_map_order_line(self, order_line: object) -> None:
            return None

    with pytest.raises(pluggy.PluginValidationError):
        get_plugin_manager(extra_plugins=[WrongArgument()])
