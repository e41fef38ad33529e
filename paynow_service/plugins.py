"""The plugin manager: hookspecs plus every plugin registered under the entry-point group.

The built-in catalog plugins are loaded exactly like an outside team's plugin, through
the `paynow_service.plugins` entry points declared in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from paynow_service import hookspecs

ENTRY_POINT_GROUP = "paynow_service.plugins"


def get_plugin_manager(extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A manager with the hookspecs, the entry-point plugins and any `extra_plugins` (tests)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs.PayNowHookSpecs)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        manager.register(plugin)
    # A misspelt hook name in a plugin is an error at start, not a silent no-op.
    manager.check_pending()
    return manager
