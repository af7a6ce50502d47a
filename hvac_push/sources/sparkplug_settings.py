"""The settings of the Sparkplug B host (L{hvac_push.sources.sparkplug}), importable without protobuf."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SparkplugSettings:
    """C{[mqtt.NAME.sparkplug]}: which groups to follow, and the site level of their points."""

    group: str = "+"
    #: The site level of the point ids; L{None}: each group id.
    site: str | None = None


__all__ = ["SparkplugSettings"]
