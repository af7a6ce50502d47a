"""What trial's janitor does, for pytest-twisted: find what a test left on the global reactor.

A test must stop listening, close its connections and wait for them to drop,
and cancel its delayed calls. Whatever it leaves runs inside the next test
(a timer firing there, a socket read there), so a leftover is a failure of
the test that left it. The reactor is imported inside functions only.
"""

from __future__ import annotations

from typing import Any

#: How long the check lets the reactor run, so connections that are already
#: closing can drop (and their timers get cancelled), before it reports them.
GRACE_SECONDS = 2.0
#: One turn of the reactor between two looks during the grace.
TURN_SECONDS = 0.01
#: Turns to wait once no reader or writer is left, for the last close callbacks to cancel their timers.
QUIET_TURNS = 5


def leftovers(reactor: Any) -> dict[str, list[Any]]:
    """The delayed calls still pending and the readers/writers still registered (the waker excluded)."""
    internal: set[Any] = getattr(reactor, "_internalReaders", set())
    return {
        "delayed calls": [call for call in reactor.getDelayedCalls() if call.active()],
        "readers": [r for r in reactor.getReaders() if r not in internal],
        "writers": [w for w in reactor.getWriters() if w not in internal],
    }


def describe(found: dict[str, list[Any]]) -> str:
    """One line per leftover, naming what it is (a delayed call prints its function and due time)."""
    lines = []
    for kind, items in found.items():
        for item in items:
            lines.append(f"  {kind[:-1]}: {item!r}{_batched(item)}"[:400])
    return "\n".join(lines)


def _batched(call: Any) -> str:
    """For a txaio batched-timer bucket (Autobahn's handshake timers), the functions waiting in it."""
    timer = getattr(getattr(call, "func", None), "__self__", None)
    buckets = getattr(timer, "_buckets", None)
    if not isinstance(buckets, dict) or not call.args or call.args[0] not in buckets:
        return ""
    names = []
    for waiting in buckets[call.args[0]][1]:
        cells = getattr(getattr(waiting, "_call", None), "__closure__", None) or ()
        names += [getattr(c.cell_contents, "__qualname__", "") for c in cells if callable(c.cell_contents)]
    return f" waiting: {', '.join(n for n in names if n) or '?'}"


def settle(reactor: Any, spin: Any, grace: float = GRACE_SECONDS) -> dict[str, list[Any]]:
    """Run the reactor (through C{spin}, which waits for a Deferred) until nothing is left or C{grace} ran out.

    Timers that were pending when the test ended and that fire during the
    grace (instead of being cancelled as their connection drops) are
    reported too: they would have fired inside the next test.
    """
    from twisted.internet.task import deferLater

    found = leftovers(reactor)
    if not any(found.values()):
        return found
    now = reactor.seconds()
    # Timers (set for later), as opposed to a callLater(0) that just finishes pending work.
    timers = [call for call in found["delayed calls"] if call.getTime() - now > 0.05]
    deadline = now + grace
    quiet_turns = 0
    while any(found.values()) and reactor.seconds() < deadline and quiet_turns < QUIET_TURNS:
        spin(deferLater(reactor, TURN_SECONDS, lambda: None))
        found = leftovers(reactor)
        # With no connection left, nothing is going to cancel a pending timer: stop waiting soon.
        quiet_turns = 0 if found["readers"] or found["writers"] else quiet_turns + 1
    fired = [call for call in timers if call.called and not call.cancelled]
    found["delayed calls"] = list(dict.fromkeys(found["delayed calls"] + fired))
    return found


def clean(reactor: Any, found: dict[str, list[Any]]) -> None:
    """Remove what a failed test left, so the following tests start on a clean reactor."""
    for call in found["delayed calls"]:
        if call.active():
            call.cancel()
    for selectable in set(found["readers"] + found["writers"]):
        reactor.removeReader(selectable)
        reactor.removeWriter(selectable)
        close = getattr(selectable, "connectionLost", None)
        try:
            if hasattr(selectable, "stopListening"):
                selectable.stopListening()
            elif hasattr(selectable, "abortConnection"):
                selectable.abortConnection()
            elif close is not None:
                from twisted.internet.error import ConnectionDone
                from twisted.python.failure import Failure

                close(Failure(ConnectionDone("removed by the reactor janitor")))
        except Exception:
            pass
