"""The product catalog (PRODUCT_CATALOG, TOML): which product grants how many points.

Parsed once at start by the composition root and handed to the plugin hooks, which
stay pure (no I/O). Unknown sections are kept in `raw` so an outside plugin can read
its own configuration from the same file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paynow_service.domain.ledger import Kind


class CatalogError(ValueError):
    """The catalog file is not valid TOML or a rule is malformed."""


@dataclass(frozen=True)
class ProductRule:
    points: int
    kind: Kind = "paid"


@dataclass(frozen=True)
class PlanRule:
    points_per_cycle: int
    kind: Kind = "paid"


@dataclass(frozen=True)
class Catalog:
    products: Mapping[str, ProductRule] = field(default_factory=dict)
    subscriptions: Mapping[str, PlanRule] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, text: str) -> Catalog:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise CatalogError(f"catalog is not valid TOML: {err}") from None
        products = {
            pid: ProductRule(_points(rule, "points", pid), _kind(rule, pid))
            for pid, rule in _section(data, "products").items()
        }
        plans = {
            pid: PlanRule(_points(rule, "points_per_cycle", pid), _kind(rule, pid))
            for pid, rule in _section(data, "subscriptions").items()
        }
        return cls(products=products, subscriptions=plans, raw=data)


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Mapping[str, Any]]:
    section = data.get(name, {})
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise CatalogError(f"catalog [{name}] must be a table of tables keyed by PayNow product id")
    return section


def _points(rule: Mapping[str, Any], key: str, product_id: str) -> int:
    value = rule.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CatalogError(f"catalog entry {product_id!r}: {key} must be a non-negative integer")
    return value


def _kind(rule: Mapping[str, Any], product_id: str) -> Kind:
    kind = rule.get("kind", "paid")
    if kind == "paid":
        return "paid"
    if kind == "promo":
        return "promo"
    raise CatalogError(f"catalog entry {product_id!r}: kind must be 'paid' or 'promo'")
