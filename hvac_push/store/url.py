"""C{--store URL} and the plant file's C{store = "..."}: which database, if any."""

from __future__ import annotations

import re

from hvac_push.store.interface import Retention, Store, StoreError

DEFAULT_STORE = "sqlite:hvac-push.db"
MEMORY = "memory"


def check_store_url(text: object) -> str | None:
    """What is wrong with C{text} as a store URL, or L{None} if its form is fine (nothing is opened)."""
    if not isinstance(text, str) or not text:
        return "expected 'sqlite:PATH', 'postgresql://...' or 'memory'"
    if text == MEMORY:
        return None
    if text.startswith("sqlite:"):
        path = text[len("sqlite:"):]
        if path.startswith("//"):
            path = path[2:]
        return None if path and "\0" not in path else "sqlite: needs a file path, e.g. sqlite:hvac-push.db"
    if text.startswith(("postgresql://", "postgres://")):
        return None
    return f"unknown store {text[:40]!r}: expected 'sqlite:PATH', 'postgresql://...' or 'memory'"


def make_store(text: str) -> Store | None:
    """The store C{text} names, not yet opened (L{None} for C{memory}); C{ValueError} for a bad URL."""
    problem = check_store_url(text)
    if problem is not None:
        raise ValueError(problem)
    if text == MEMORY:
        return None
    if text.startswith("sqlite:"):
        from hvac_push.store.sqlite import SqliteStore

        path = text[len("sqlite:"):]
        return SqliteStore(path[2:] if path.startswith("//") else path)
    try:
        from hvac_push.store.postgres import PostgresStore
    except ImportError:
        raise ValueError("postgresql:// needs psycopg 3: pip install 'psycopg[binary]'") from None
    return PostgresStore(text)


def open_store(text: str) -> Store | None:
    """Make and open the store C{text} names; C{StoreError} or C{ValueError} with a one-line reason."""
    store = make_store(text)
    if store is not None:
        try:
            store.open()
        except StoreError:
            store.close()
            raise
    return store


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdwy])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_retention(text: str) -> Retention:
    """C{RAW,MINUTE,HOUR[,JOURNAL]} as durations with a unit, e.g. C{7d,365d,5y} or C{7d,365d,5y,10y}.

    The alarm journal keeps 5 years unless the fourth is given; C{ValueError} with the reason.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (3, 4):
        raise ValueError(f"expected durations RAW,MINUTE,HOUR[,JOURNAL] such as 7d,365d,5y or 7d,365d,5y,10y, got {text!r}")
    seconds = []
    for part in parts:
        match = _DURATION.match(part)
        if match is None or float(match.group(1)) <= 0:
            raise ValueError(f"bad duration {part!r}: a positive number with s, m, h, d, w or y, e.g. 90d")
        seconds.append(float(match.group(1)) * _SECONDS[match.group(2)])
    return Retention(*seconds)


__all__ = ["DEFAULT_STORE", "MEMORY", "check_store_url", "make_store", "open_store", "parse_retention"]
