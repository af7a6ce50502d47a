"""C{/plant.json}: the plant at a glance, for the dashboard's overview (docs/dashboard.md).

The overview shows every unit but subscribes only to the few points its tiles
draw; what it needs about the rest (each unit's kind, its point names for the
search, how many of its points are ok/stale/fault/down/waiting, its alarms and
their highest severity (and the alarms themselves, for the overview's list), and the alarm limits of its points for the trend
charts) comes from here, read when asked and polled every few seconds. A token
sees only the points its grant reads, exactly as on the WebSocket.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from hvac_push.analytics.equipment import kind_of
from hvac_push.transport.api import challenge, request_permissions
from hvac_push.transport.auth import ALL, AuthError, Authenticator, Permissions
from hvac_push.transport.fanout import PushServerFactory
from hvac_push.transport.wire import alarm_dict

#: Severities from the most to the least urgent (docs/alarms.md).
SEVERITY_ORDER = ("critical", "major", "minor", "warning")
#: The most alarms listed in full (the most severe first); the per-unit counts always count them all.
MAX_LISTED_ALARMS = 500


def _rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def plant_summary(factory: PushServerFactory, permissions: Permissions = ALL,
                  kinds: dict[str, str] | None = None) -> dict[str, Any]:
    """Per unit (C{site/unit}): kind, point names, counts by status, alarms and limits."""
    units: dict[str, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    declared = kinds or {}
    for point in factory.hub.points():
        if not permissions.allows(point.point_id):
            continue
        site, unit, name = point.point_id.split("/", 2)
        key = f"{site}/{unit}"
        entry = units.get(key)
        if entry is None:
            entry = units[key] = {
                "site": site, "unit": unit, "kind": kind_of(site, unit, declared),
                "points": [], "status": {}, "alarms": 0, "severity": None, "limits": {},
            }
        entry["points"].append(name)
        entry["status"][point.status] = entry["status"].get(point.status, 0) + 1
        totals[point.status] = totals.get(point.status, 0) + 1
    alarms = factory.alarms
    listed: list[Any] = []
    if alarms is not None:
        for key, entry in units.items():
            for name in entry["points"]:
                limits = alarms.limits_for(f"{key}/{name}")
                if limits is not None and (limits.high is not None or limits.low is not None):
                    entry["limits"][name] = {"high": limits.high, "low": limits.low}
        current = alarms.current(permissions.allows)
        listed = sorted(current, key=lambda a: (_rank(a.severity), -float(a.ts or 0)))[:MAX_LISTED_ALARMS]
        for alarm in current:
            parts = str(alarm.point).split("/")
            entry = units.get("/".join(parts[:2])) if len(parts) >= 3 else None
            if entry is None:
                continue
            entry["alarms"] += 1
            worst = entry["severity"]
            if worst is None or _rank(alarm.severity) < _rank(worst):
                entry["severity"] = alarm.severity
    return {
        "epoch": factory.hub.epoch,
        "version": factory.hub.version,
        "points": totals,
        "units": list(units.values()),
        "alarm_list": [alarm_dict(a) for a in listed],
    }


class PlantSummaryResource(Resource):
    """C{GET /plant.json}: L{plant_summary} for the request's token (401 without a valid one when tokens are on)."""

    isLeaf = True

    def __init__(self, factory: PushServerFactory):
        super().__init__()
        self._factory = factory

    def render_GET(self, request: Request) -> bytes:
        authenticator: Authenticator | None = self._factory.authenticator
        permissions = ALL
        if authenticator is not None:
            try:
                permissions = request_permissions(authenticator, request)
            except AuthError as e:
                request.setResponseCode(401)
                request.setHeader(b"www-authenticate", challenge(e))
                request.setHeader(b"content-type", b"application/json")
                return json.dumps({"error": e.reason}).encode("utf-8") + b"\n"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        document = plant_summary(self._factory, permissions, self._factory.unit_kinds)
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
