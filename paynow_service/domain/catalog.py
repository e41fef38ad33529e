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

from paynow_service.domain.errors import CatalogError as CatalogError
from paynow_service.domain.ids import as_kind
from paynow_service.domain.ledger import DEFAULT_PROMO_DAYS, Kind

MAX_EXPIRES_IN_DAYS = 36_500


@dataclass(frozen=True)
class ProductRule:
    points: int
    kind: Kind = "paid"
    expires_in_days: int = DEFAULT_PROMO_DAYS  # promo only: the life of the lot a credit adds


@dataclass(frozen=True)
class PlanRule:
    points_per_cycle: int
    kind: Kind = "promo"  # the app's default for subscription points
    expires_in_days: int = DEFAULT_PROMO_DAYS


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
            pid: ProductRule(_points(rule, "points", pid), _kind(rule, pid, "paid"), _days(rule, pid))
            for pid, rule in _section(data, "products").items()
        }
        plans = {
            pid: PlanRule(_points(rule, "points_per_cycle", pid), _kind(rule, pid, "promo"), _days(rule, pid))
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


def _days(rule: Mapping[str, Any], product_id: str) -> int:
    days = rule.get("expires_in_days", DEFAULT_PROMO_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_EXPIRES_IN_DAYS:
        raise CatalogError(
            f"catalog entry {product_id!r}: expires_in_days must be a whole number of days,"
            f" from 1 to {MAX_EXPIRES_IN_DAYS}"
        )
    return days


def _kind(rule: Mapping[str, Any], product_id: str, default: Kind) -> Kind:
    kind = as_kind(rule.get("kind", default))
    if kind is None:
        raise CatalogError(f"catalog entry {product_id!r}: kind must be 'paid' or 'promo'")
    return kind
