"""Unit conversion driven by the site mapping's factors: no unit or factor is written here.

A lab value is only as good as its unit, so a unit the mapping does not list is reported, never guessed.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class UnitTable:
    """One canonical unit and every spelling the mapping accepts, each with its factor to the canonical unit."""

    canonical: str
    factors: Mapping[str, float]  # spelling (aliases already resolved) -> multiply by this to get `canonical`

    def factor(self, unit: str | None) -> float | None:
        """The factor for a spelling, or None when the mapping does not list it."""
        if unit is None:
            return None
        return self.factors.get(unit.strip())


def unit_table(canonical: str, conversions: Mapping[str, float],
               aliases: Mapping[str, str] | None = None) -> UnitTable:
    """Fold aliases into the factor table once, at load time, so a lookup per value is one dict access."""
    factors = {unit.strip(): float(factor) for unit, factor in conversions.items()}
    for alias, target in (aliases or {}).items():
        if target.strip() in factors:
            factors.setdefault(alias.strip(), factors[target.strip()])
    return UnitTable(canonical, MappingProxyType(factors))


def quantity_unit(table: UnitTable, quantity: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """The unit of a FHIR Quantity as written, and its factor; tries the coded unit first, then the label."""
    written = [quantity.get(key) for key in ("code", "unit") if isinstance(quantity.get(key), str)]
    for unit in written:
        factor = table.factor(unit)
        if factor is not None:
            return unit, factor
    return (written[0] if written else None), None


def convert(value: float, factor: float) -> float:
    """value x factor, rid of binary noise so 120000 /uL gives 120.0 and not 120.00000000000001."""
    return tidy(float(value) * factor)


def tidy(number: float) -> float:
    """Round to 12 significant digits: far finer than any lab or dose, coarse enough to drop float noise."""
    return float(f"{number:.12g}")


def per_day(frequency: float, period: float, periods_per_day: float) -> float:
    """How many times a day `frequency` times per `period` units is, given how many units make a day.

    Not rounded: the caller multiplies by the dose first and rounds once, so 14 mg once a week is 2 mg a day.
    """
    return frequency * periods_per_day / period


def show(number: float | int) -> str:
    """A number as a clinician would write it: 120, not 120.0; 68.0388555, not 68.03885550000001."""
    return f"{number:.10g}"
