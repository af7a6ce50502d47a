"""Units of measure: the one home of unit parsing and conversion (with pint).

A point's unit string (C{"°C"}, C{"degF"}, C{"W"}, C{"tons"}, ...) is parsed
once, into a linear L{Conversion} to the canonical unit of a quantity
(kW for power, °C for temperature, kWh for energy); after that, converting a
sample is one multiply and one add. pint (and its registry, which takes most
of a second to build) is loaded on the first parse, never on import, so the
fan-out and anything that never meets a unit string do not pay for it.

An empty unit string means "already in the canonical unit": sources that do
not say (a bare MQTT payload) keep working as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: The canonical unit of each quantity the derivations use (pint names).
CANONICAL: dict[str, str] = {"temperature": "degC", "power": "kW", "energy": "kWh"}
#: How the canonical units are written on derived points.
CANONICAL_LABEL: dict[str, str] = {"temperature": "°C", "power": "kW", "energy": "kWh"}

#: What each input point name is, for the derivations that read it.
INPUT_QUANTITIES: dict[str, str] = {
    "supply_temp": "temperature",
    "return_temp": "temperature",
    "power": "power",
    "load": "power",
}

#: Spellings HVAC people use that pint reads as something else ("ton" is a mass, "TR" a
#: gas constant) or does not know ("MBH", thousands of Btu per hour).
_ALIASES: dict[str, str] = {
    "ton": "refrigeration_ton",
    "tons": "refrigeration_ton",
    "tr": "refrigeration_ton",
    "rt": "refrigeration_ton",
    "tonref": "refrigeration_ton",
    "ton_of_refrigeration": "refrigeration_ton",
    "tons_of_refrigeration": "refrigeration_ton",
    "mbh": "kBtu/hour",
    "btuh": "Btu/hour",
    "btu/h": "Btu/hour",
    "deg c": "degC",
    "deg f": "degF",
    "c": "degC",
    "f": "degF",
}

_registry: Any = None
_registry_lock = threading.Lock()


class UnitError(ValueError):
    """A unit string that cannot be read, or that is not a unit of the quantity asked for."""


@dataclass(frozen=True, slots=True)
class Conversion:
    """C{canonical = value * scale + offset}: every conversion between these units is affine."""

    unit: str
    quantity: str
    scale: float = 1.0
    offset: float = 0.0

    def __call__(self, value: float) -> float:
        return value * self.scale + self.offset


def _ureg() -> Any:
    """The shared pint registry, built on first use (it takes most of a second)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            import pint

            _registry = pint.UnitRegistry(autoconvert_offset_to_baseunit=False)
        return _registry


@lru_cache(maxsize=1024)
def conversion(unit: str, quantity: str) -> Conversion:
    """The conversion of values in C{unit} to the canonical unit of C{quantity}.

    Cached per unit string, so the parse runs once. Raises L{UnitError} for an
    unknown unit or one of another dimension (a C{power} in °C).
    """
    if quantity not in CANONICAL:
        raise UnitError(f"unknown quantity {quantity!r}")
    text = unit.strip()
    if not text:
        return Conversion(unit, quantity)
    spelled = _ALIASES.get(text.lower(), text)
    ureg = _ureg()
    try:
        import pint

        zero = ureg.Quantity(0.0, spelled).to(CANONICAL[quantity]).magnitude
        one = ureg.Quantity(1.0, spelled).to(CANONICAL[quantity]).magnitude
    except pint.DimensionalityError:
        raise UnitError(f"{unit!r} is not a unit of {quantity} (expected e.g. {CANONICAL_LABEL[quantity]})") from None
    except Exception:  # pint raises several types (UndefinedUnitError, syntax errors) for unreadable text
        raise UnitError(f"unknown unit {unit!r}") from None
    return Conversion(unit, quantity, float(one - zero), float(zero))


def check(unit: str, quantity: str) -> str | None:
    """Why C{unit} cannot hold a C{quantity}, or None when it can."""
    try:
        conversion(unit, quantity)
    except UnitError as error:
        return str(error)
    return None


__all__ = ["CANONICAL", "CANONICAL_LABEL", "Conversion", "INPUT_QUANTITIES", "UnitError", "check", "conversion"]
