"""Equipment kinds: what a unit is decides the conventions of its derived values.

A unit's kind comes from the plant file (C{kind = "boiler"} on C{[units.KEY]}),
else from its name (C{chiller-2} is a chiller: the simulator's names and most
plants' tags start with the kind), else it is L{UNKNOWN}, which keeps the
cooling conventions every derivation had before kinds existed.

Names follow Project Haystack tags (Brick classes in docs/sources.md).
"""

from __future__ import annotations

from typing import Mapping

from hvac_push.core.points import Value

#: The kinds a unit may declare.
KINDS = ("chiller", "crac", "ahu", "boiler", "heat_pump", "vav", "meter")
UNKNOWN = "unknown"

#: Kinds that move heat out of a load: delta-T is return minus supply.
COOLING = frozenset({"chiller", "crac", "ahu", UNKNOWN})
#: Kinds that put heat in: delta-T is supply minus return.
HEATING = frozenset({"boiler"})

#: The derivations each kind gets (energy applies to every kind with a C{power} point).
_APPLIES: dict[str, frozenset[str]] = {
    "chiller": frozenset({"delta_t", "cop", "kw_per_ton", "short_cycling"}),
    "crac": frozenset({"delta_t", "cop", "kw_per_ton", "short_cycling"}),
    "ahu": frozenset({"delta_t", "cop", "kw_per_ton", "short_cycling"}),
    "heat_pump": frozenset({"delta_t", "cop", "kw_per_ton", "short_cycling"}),
    "boiler": frozenset({"delta_t"}),
    "vav": frozenset(),
    "meter": frozenset(),
    UNKNOWN: frozenset({"delta_t", "cop", "kw_per_ton", "short_cycling"}),
}

_PREFIXES = sorted(KINDS, key=len, reverse=True)  # "heat_pump" before any shorter overlap
_ALIASES = {"heatpump": "heat_pump", "hp": "heat_pump", "ch": "chiller", "blr": "boiler"}


def kind_of(site: str, unit: str, declared: Mapping[str, str]) -> str:
    """The kind of C{site/unit}: declared (by C{"site/unit"} or C{"unit"}), else read from the name."""
    found = declared.get(f"{site}/{unit}") or declared.get(unit)
    if found:
        return found
    lowered = unit.lower().replace("-", "_")
    for kind in _PREFIXES:
        if lowered == kind or lowered.startswith(kind + "_") or (lowered.startswith(kind) and lowered[len(kind):].isdigit()):
            return kind
    head = lowered.split("_", 1)[0]
    stripped = head.rstrip("0123456789")
    return _ALIASES.get(head) or _ALIASES.get(stripped) or UNKNOWN


def applies(kind: str, derivation: str) -> bool:
    """Whether C{derivation} (C{delta_t}, C{cop}, C{kw_per_ton}, C{short_cycling}) is computed for C{kind}."""
    return derivation in _APPLIES.get(kind, _APPLIES[UNKNOWN])


def heating_mode(value: Value) -> bool | None:
    """A heat pump's C{mode} point read as heating (True), cooling (False) or unknown (None).

    Accepts the usual spellings: C{"heat"}/C{"heating"}, C{"cool"}/C{"cooling"}, or a boolean
    C{true} for heating (Haystack C{heatPumpMode} style flags).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("heat", "heating"):
            return True
        if text in ("cool", "cooling"):
            return False
    return None


def heating(kind: str, mode: bool | None) -> bool:
    """Whether delta-T is supply minus return: boilers always; heat pumps when their mode says heating."""
    return kind in HEATING or (kind == "heat_pump" and mode is True)


__all__ = ["COOLING", "HEATING", "KINDS", "UNKNOWN", "applies", "heating", "heating_mode", "kind_of"]
