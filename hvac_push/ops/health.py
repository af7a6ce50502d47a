"""Readiness: named conditions that must all hold before C{/healthz} says 200.

Any component can add a condition: a callable returning C{(ok, detail)}, where
C{detail} is a short JSON-friendly value (a string, a number, a small dict)
that explains the answer. Conditions are evaluated when C{/healthz} (or
C{/metrics}) is read, on the reactor thread, so they must be quick and must
not block. A condition that raises counts as not ready, with the error as its
detail.

    push.add_readiness_check("mqtt", lambda: (edge.synced, f"{edge.topics} topics"))
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

ReadinessCheck = Callable[[], tuple[bool, Any]]


class Readiness:
    """An ordered set of named readiness conditions."""

    _log = Logger()

    def __init__(self) -> None:
        self._checks: dict[str, ReadinessCheck] = {}
        self._raising: set[str] = set()

    def add(self, name: str, check: ReadinessCheck) -> None:
        """Add (or replace) the condition called C{name}."""
        if not isinstance(name, str) or not name:
            raise ValueError("a readiness check needs a non-empty name")
        if not callable(check):
            raise TypeError(f"readiness check {name!r} is not callable")
        self._checks[name] = check

    def remove(self, name: str) -> None:
        """Drop the condition called C{name} (no error if there is none)."""
        self._checks.pop(name, None)
        self._raising.discard(name)

    def names(self) -> list[str]:
        return list(self._checks)

    def check(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Evaluate every condition: C{(all ok, {name: {"ok": bool, "detail": ...}})}."""
        results: dict[str, dict[str, Any]] = {}
        ready = True
        for name, check in list(self._checks.items()):
            try:
                ok, detail = check()
                ok = bool(ok)
            except Exception as e:
                ok, detail = False, f"check failed: {type(e).__name__}: {e}"
                if name not in self._raising:
                    # Log only when it starts raising: health is polled, often.
                    self._raising.add(name)
                    self._log.failure("readiness check {name!r} raised", name=name)
            else:
                self._raising.discard(name)
            results[name] = {"ok": ok, "detail": detail}
            ready = ready and ok
        return ready, results


__all__ = ["Readiness", "ReadinessCheck"]
