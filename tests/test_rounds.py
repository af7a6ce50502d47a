"""hvac_push.transport.rounds: the fan-out runs in slices, and the reactor serves others between them.

Driven by the memory clock (L{hvac_push.testing.MemoryServer}): each
C{advance(0)} is one reactor turn, so "before the fan-out finished" is a
count of turns, not a time.
"""

from __future__ import annotations

from hvac_push.core.points import Sample
from hvac_push.testing import MemoryConnection, MemoryServer
from hvac_push.transport.protocol import PushServerProtocol


def one_turn(s: MemoryServer[PushServerProtocol]) -> None:
    """One reactor turn: run the timers due now, not those they schedule (as Twisted's reactor does).

    C{Clock.advance(0)} would also run the calls added meanwhile, that is a
    whole round at once.
    """
    clock = s.clock
    due = [c for c in clock.calls if c.getTime() <= clock.seconds()]
    for call in due:
        if call in clock.calls:
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


def _many(s: MemoryServer[PushServerProtocol], count: int) -> list[MemoryConnection[PushServerProtocol]]:
    """C{count} clients, each from its own loopback address (the per-address cap stays out of the way)."""
    return [s.connect(peer=f"127.0.{i // 200}.{i % 200 + 1}") for i in range(count)]


def _busy(s: MemoryServer[PushServerProtocol]) -> bool:
    """Whether a delivery round still has slices to run."""
    return s.factory.rounds.in_progress


def _server(slice_clients: int) -> MemoryServer[PushServerProtocol]:
    return MemoryServer(PushServerProtocol, slice_clients=slice_clients)


def _values(c: MemoryConnection[PushServerProtocol], point: str) -> list[float]:
    return [m["points"][point]["value"] for m in c.messages() if point in m.get("points", {})]


def test_a_new_clients_handshake_and_snapshot_complete_while_a_fan_out_is_still_in_progress():
    s = _server(slice_clients=10)
    s.factory.snapshots.max_age = 0  # every opening built afresh (shared ones: tests/test_snapshots.py)
    s.publish(Sample("p/u/a", 0.0, ts=1.0))
    clients = _many(s, 100)
    s.publish(Sample("p/u/a", 1.0, ts=2.0))
    one_turn(s)  # the wake: the round starts and runs its first slice only
    assert _busy(s)
    reached = sum(1 for c in clients if _values(c, "p/u/a") == [0.0, 1.0])
    assert reached == 10

    newcomer = s.connect(peer="127.0.9.9")  # handled between slices, as the reactor would
    assert newcomer.status == 101
    snapshot = newcomer.messages()[0]
    assert snapshot["type"] == "snapshot" and snapshot["points"]["p/u/a"]["value"] == 1.0
    assert _busy(s)  # the fan-out has not finished
    assert sum(1 for c in clients if len(_values(c, "p/u/a")) == 2) < 100

    turns = 0
    while _busy(s) and turns < 50:
        one_turn(s)
        turns += 1
    assert turns == 9  # ten slices of ten clients in all
    assert all(_values(c, "p/u/a") == [0.0, 1.0] for c in clients)
    assert [m["type"] for m in newcomer.messages()] == ["snapshot"]  # it was already current


def test_a_change_during_a_round_reaches_everyone_in_order_once_each():
    s = _server(slice_clients=7)
    clients = _many(s, 30)
    for step in range(1, 6):
        s.publish(Sample("p/u/a", float(step), ts=float(step)))
        one_turn(s)  # the wake: one slice, then the next change comes
        one_turn(s)
    for _ in range(100):
        if not _busy(s):
            break
        one_turn(s)
    assert not _busy(s)
    for c in clients:
        seen = _values(c, "p/u/a")
        assert seen == sorted(seen) and seen[-1] == 5.0  # in order, conflated, the newest last
        versions = [m["version"] for m in c.messages()]
        assert versions == sorted(set(versions))  # never the same version twice
        assert c.protocol.last_version == s.hub.version


def test_clients_that_close_mid_round_are_skipped_and_the_rest_still_served():
    s = _server(slice_clients=5)
    clients = _many(s, 20)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    one_turn(s)
    waiting = [c for c in clients if _values(c, "p/u/a") == []]
    assert len(waiting) == 15
    gone = waiting[:5]
    for c in gone:
        c.disconnect()
    while _busy(s):
        one_turn(s)
    assert all(_values(c, "p/u/a") == [1.0] for c in clients if c not in gone)
    assert all(_values(c, "p/u/a") == [] for c in gone)
    assert s.factory.stats.messages_sent == 15


def test_an_alarm_finishes_the_round_first_so_no_client_hears_of_a_value_before_it():
    from hvac_push.analytics.alarms import AlarmEngine

    s = _server(slice_clients=3)
    engine = AlarmEngine(s.hub, s.clock)
    s.factory.attach_alarms(engine)
    clients = _many(s, 12)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    one_turn(s)
    assert _busy(s)
    s.factory.send_alarm(1, _FakeAlarm("p/u/a"))  # type: ignore[arg-type]
    assert not _busy(s)
    for c in clients:
        kinds = [m["type"] for m in c.messages()]
        assert kinds == ["snapshot", "update", "alarm"], kinds


class _FakeAlarm:
    """Just what wire.alarm_dict reads."""

    def __init__(self, point: str):
        self.id = f"{point}:high"
        self.point = point
        self.kind = "high"
        self.state = "active"
        self.severity = "warning"
        self.value = 1.0
        self.limit = 0.5
        self.ts = 1.0
        self.message = "high"


def test_a_coalescing_window_packs_the_changes_it_sees_into_one_frame_per_client_in_order():
    s = MemoryServer(PushServerProtocol, coalesce=0.005)
    clients = _many(s, 3)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    s.advance(0.002)
    s.publish(Sample("p/u/b", 2.0, ts=2.0))
    s.advance(0.002)
    s.publish(Sample("p/u/a", 3.0, ts=3.0), Sample("p/u/c", 4.0, ts=3.0))
    assert all(len(c.messages()) == 1 for c in clients)  # only the snapshot: the window is open
    s.advance(0.001)
    for c in clients:
        snapshot, update = c.messages()
        assert update["type"] == "update" and update["version"] == s.hub.version
        assert list(update["points"]) == ["p/u/b", "p/u/a", "p/u/c"]  # oldest change first
        assert {k: v["value"] for k, v in update["points"].items()} == {"p/u/a": 3.0, "p/u/b": 2.0, "p/u/c": 4.0}
    assert s.factory.stats.frames_encoded == 1
    s.publish(Sample("p/u/a", 5.0, ts=5.0))
    s.advance(0.005)
    assert all(c.messages()[-1]["points"]["p/u/a"]["value"] == 5.0 for c in clients)


def test_without_a_window_each_reactor_turn_flushes_its_own_changes():
    s = MemoryServer(PushServerProtocol)
    c = s.connect()
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    s.advance(0.002)
    s.publish(Sample("p/u/b", 2.0, ts=2.0))
    s.advance(0.002)
    assert [list(m["points"]) for m in c.messages()[1:]] == [["p/u/a"], ["p/u/b"]]


# -- behaviours mutation testing found unpinned (scripts/mutation, docs/testing.md) ------------------


def _finish_round(s: MemoryServer[PushServerProtocol], limit: int = 50) -> None:
    """Run reactor turns (no time passes, so no poll): the wake's, then until the round and its re-runs are over."""
    one_turn(s)
    for _ in range(limit):
        if not _busy(s):
            return
        one_turn(s)
    assert not _busy(s), "the round never ended"


def test_a_change_made_mid_round_reaches_the_clients_already_passed_by_a_rerun_that_then_stops():
    s = _server(slice_clients=5)
    clients = _many(s, 15)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    one_turn(s)  # the first slice of five has been served
    assert sum(1 for c in clients if _values(c, "p/u/a") == [1.0]) == 5
    s.publish(Sample("p/u/a", 2.0, ts=2.0))  # the last change; nothing else will wake the factory
    _finish_round(s)
    assert all(_values(c, "p/u/a")[-1] == 2.0 for c in clients)
    assert all(c.protocol.last_version == s.hub.version for c in clients)


def test_a_paused_client_does_not_hold_back_the_rest_of_its_slice():
    s = _server(slice_clients=100)
    clients = _many(s, 20)
    paused = clients[::4]
    for c in paused:
        c.protocol.pauseProducing()
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    _finish_round(s)
    assert all(_values(c, "p/u/a") == [1.0] for c in clients if c not in paused)
    assert all(_values(c, "p/u/a") == [] for c in paused)
    assert s.factory.stats.skipped_paused == len(paused)  # one skip each, counted once


def test_groups_with_nothing_to_receive_do_not_hold_back_other_groups_in_any_slice():
    s = _server(slice_clients=4)
    # Each slice meets a client with nothing to receive (p/u/b) first, so its group comes first.
    clients = [s.connect(f"/ws?points=p/u/{'ba'[i % 2]}", peer=f"127.0.0.{i + 1}") for i in range(20)]
    for _ in range(2):  # the second round finds last_version set by the cached "nothing" of the first
        s.publish(Sample("p/u/a", float(s.hub.version + 1), ts=float(s.hub.version + 1)))
        _finish_round(s)
        for i, c in enumerate(clients):
            assert c.protocol.last_version == s.hub.version
            assert len(_values(c, "p/u/a")) == (s.hub.version if i % 2 == 1 else 0)


def test_slice_size_zero_serves_everyone_in_one_turn_and_one_serves_one_client_per_turn():
    whole = _server(slice_clients=0)
    clients = _many(whole, 5)
    whole.publish(Sample("p/u/a", 1.0, ts=1.0))
    one_turn(whole)
    assert not _busy(whole) and all(_values(c, "p/u/a") == [1.0] for c in clients)
    single = _server(slice_clients=1)
    clients = _many(single, 3)
    single.publish(Sample("p/u/a", 1.0, ts=1.0))
    one_turn(single)
    assert _busy(single) and sum(1 for c in clients if _values(c, "p/u/a")) == 1
    _finish_round(single)
    assert all(_values(c, "p/u/a") == [1.0] for c in clients)


def test_a_round_shares_one_frame_across_slices_and_counts_one_flush_only_when_someone_was_behind():
    s = _server(slice_clients=2)
    clients = _many(s, 6)
    assert s.factory.stats.handshakes_accepted == 6
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    _finish_round(s)
    stats = s.factory.stats
    assert (stats.flushes, stats.frames_encoded, stats.messages_sent) == (1, 1, 6)
    update = clients[0].frames()[-1].payload
    header = 2 if len(update) < 126 else 4  # RFC 6455: a 16-bit length follows from 126 bytes on
    assert stats.bytes_sent == 6 * (header + len(update))
    assert clients[0].messages()[-1]["epoch"] == s.hub.epoch
    s.advance(s.factory.interval)  # a poll with nobody behind
    s.advance(s.factory.interval)
    assert (stats.ticks, stats.flushes, stats.frames_encoded, stats.messages_sent) == (2, 1, 1, 6)
    s.publish(Sample("p/u/a", 2.0, ts=2.0))
    _finish_round(s)
    assert (stats.flushes, stats.frames_encoded, stats.messages_sent) == (2, 2, 12)  # counters add up


def test_an_alarm_reaches_only_the_clients_subscribed_to_its_point_with_its_sequence_number():
    s = _server(slice_clients=10)
    watching = s.connect("/ws?points=p/u/a")
    elsewhere = s.connect("/ws?points=p/u/b")
    s.factory.send_alarm(7, _FakeAlarm("p/u/a"))  # type: ignore[arg-type]
    alarms = [m for m in watching.messages() if m["type"] == "alarm"]
    assert len(alarms) == 1 and alarms[0]["seq"] == 7
    assert [m["type"] for m in elsewhere.messages()] == ["snapshot"]


def test_a_client_with_a_deadband_gets_only_moves_past_it_while_its_slice_mates_get_every_change():
    s = _server(slice_clients=100)
    plain = _many(s, 5)
    banded = s.connect("/ws?points=p/u/a", peer="127.0.5.1")
    banded.send_json({"type": "subscribe", "points": ["p/u/a"], "deadband": 1.0})
    for value in (0.0, 0.5, 0.9, 1.5, 1.6, 3.0):
        s.publish(Sample("p/u/a", value, ts=value + 1), Sample("p/u/other", value, ts=value + 1))
        _finish_round(s)
    assert all(set(m["points"]) == {"p/u/a"} for m in banded.messages() if m["type"] == "update")  # nothing else
    stats = s.factory.stats
    assert stats.messages_sent == 6 * 5 + 3
    plain_bytes = sum((2 if len(f.payload) < 126 else 4) + len(f.payload) for f in plain[0].frames()[1:])
    banded_payloads = sum(len(f.payload) for f in banded.frames() if b'"update"' in f.payload)
    assert stats.bytes_sent == 5 * plain_bytes + banded_payloads  # a COV send counts its payload
    assert all(_values(c, "p/u/a") == [0.0, 0.5, 0.9, 1.5, 1.6, 3.0] for c in plain)
    assert _values(banded, "p/u/a") == [0.0, 1.5, 3.0]
    assert banded.protocol.last_version == s.hub.version
    updates = [m for m in banded.messages() if m["type"] == "update"]
    assert [m["version"] for m in updates] == [2, 8, 12] and all(m["epoch"] == s.hub.epoch for m in updates)


def test_a_factory_stopped_mid_round_leaves_no_timer_behind_and_delivers_nothing_more():
    s = _server(slice_clients=1)
    clients = _many(s, 3)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    one_turn(s)  # one client of three served, the round goes on
    s.publish(Sample("p/u/a", 2.0, ts=2.0))  # and a flush is pending
    assert _busy(s)
    s.factory.stop()
    assert s.clock.getDelayedCalls() == [] and not _busy(s)
    s.advance(1.0)
    assert sorted(len(_values(c, "p/u/a")) for c in clients) == [0, 0, 1]
    s.factory.stop()  # stopping again, with nothing running, is harmless
