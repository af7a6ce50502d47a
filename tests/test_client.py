"""hvac_push.client against a real server: a twistd subprocess, driven with plain asyncio (no Twisted)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvac_push.client import (
    AlarmChange,
    AuthenticationError,
    Connected,
    ConnectionLost,
    Disconnected,
    Event,
    Filter,
    HandshakeError,
    Mirror,
    PointChange,
    ServerError,
)
from hvac_push.client.mirror import _with_query
from hvac_push.client.model import Value, pattern_matches
from hvac_push.client.state import MirrorState
from tests.clientserver import (
    ALARM_PLANT,
    ROOT,
    CuttableProxy,
    Server,
    matches_a_fresh_snapshot,
    process_lines,
    running,
)
from hvac_push.transport.streaming import STREAM_THRESHOLD
from tests.wsprobe import first_start, refused_port

pytestmark = pytest.mark.slow

SIM = ("--sim-seed", "11", "--sim-units", "3", "--sim-rate", "60")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("sim"), *SIM) as server:
        yield server


def test_mirror_holds_the_subscribed_points_and_follows_their_updates(sim: Server) -> None:
    async def main() -> None:
        async with Mirror(sim.url, points=["plant/chiller-1/#", "plant/+/supply_temp"]) as plant:
            assert plant.points and plant.epoch and plant.version
            assert all(
                pattern_matches("plant/chiller-1/#", p) or p.endswith("/supply_temp") for p in plant.points
            )
            assert "plant/ahu-1/supply_temp" in plant.points and "plant/ahu-1/fan_speed" not in plant.points
            seen: list[PointChange] = []
            plant.on_change(seen.append)
            held = dict(plant.points)
            everything = plant.changes()  # starts with the current state of every point
            initial = [await asyncio.wait_for(everything.__anext__(), 1) for _ in held]
            assert {c.point_id: c.point for c in initial if c.previous is None}.keys() == held.keys()
            await everything.aclose()
            changes = plant.changes(current=False)
            first = await asyncio.wait_for(changes.__anext__(), 10)
            assert first.point is not None and first.point_id in plant.points
            assert first.previous is not None and first.point.version > first.previous.version
            await matches_a_fresh_snapshot(plant, sim, "plant/chiller-1/#,plant/+/supply_temp")
            assert seen and all(c.point_id in plant.points for c in seen)
            assert await plant.ping() > 0
            samples = await plant.history("plant/chiller-1/supply_temp")
            assert samples and all(isinstance(ts, float) for ts, _ in samples)
            with pytest.raises(ServerError) as e:
                await plant.history("plant/nowhere/x")
            assert e.value.code == "unknown_point"
        assert not plant.connected

    asyncio.run(main())


def test_subscribe_with_a_filter_then_unsubscribe(sim: Server) -> None:
    async def main() -> None:
        async with Mirror(sim.url, points=["plant/chiller-1/#"]) as plant:
            # A deadband no simulated value ever crosses: numbers of ahu-1 never move after its snapshot.
            await plant.subscribe(["plant/ahu-1/#"], Filter(deadband=1e9))
            ahu = {p: s for p, s in plant.points.items() if p.startswith("plant/ahu-1/")}
            assert len(ahu) >= 5
            moved: list[PointChange] = []
            plant.on_change(lambda c: moved.append(c) if c.point_id.startswith("plant/ahu-1/") else None)
            before = plant.version or 0
            await plant.wait_until(lambda m: (m.version or 0) > before + 60, 20)
            numeric = [c for c in moved if isinstance(c.value, float) and c.status == (c.previous and c.previous.status)]
            assert not numeric, numeric
            assert plant.points["plant/chiller-1/supply_temp"].version > before  # the unfiltered ones went on

            removed: list[PointChange] = []
            plant.on_change(lambda c: removed.append(c) if c.removed else None)
            await plant.unsubscribe(["plant/ahu-1/#"])
            assert not [p for p in plant.points if p.startswith("plant/ahu-1/")]
            assert {c.point_id for c in removed} == set(ahu)
            with pytest.raises(ServerError) as e:
                await plant.unsubscribe(["plant/ahu-1/#"])
            assert e.value.code == "not_subscribed"
            with pytest.raises(ServerError) as e:
                await plant.subscribe(["plant/x"])
            assert e.value.code == "bad_pattern"
            assert plant.patterns == ("plant/chiller-1/#",)

    asyncio.run(main())


def mean(samples: list[tuple[float, Value]]) -> float:
    numbers = [float(v) for _, v in samples if isinstance(v, (int, float))]
    return sum(numbers) / len(numbers)


def test_requests_in_flight_together_each_get_their_own_answer_by_id(sim: Server) -> None:
    async def main() -> None:
        async with Mirror(sim.url, points=["plant/chiller-1/#"]) as plant:
            supply, ret = "plant/chiller-1/supply_temp", "plant/chiller-1/return_temp"
            results = await asyncio.gather(
                plant.history(supply),
                plant.ack("plant/chiller-1/nothing:high"),
                plant.history(ret),
                plant.unsubscribe(["plant/never/#"]),
                plant.ping(),
                plant.subscribe(["plant/ahu-1/supply_temp"]),
                return_exceptions=True,
            )
            supply_samples, ack_error, return_samples, unsubscribe_error, rtt, subscribed = results
            assert isinstance(supply_samples, list) and isinstance(return_samples, list)
            assert supply_samples and return_samples
            # Each history answer is its own point's: a chiller's return water is warmer than its supply.
            assert mean(supply_samples) < mean(return_samples)
            assert isinstance(ack_error, ServerError) and ack_error.code == "unknown_alarm"
            assert isinstance(unsubscribe_error, ServerError) and unsubscribe_error.code == "not_subscribed"
            assert isinstance(rtt, float) and subscribed is None
            assert "plant/ahu-1/supply_temp" in plant.points

    asyncio.run(main())


def test_a_dropped_connection_resumes_without_a_gap(sim: Server) -> None:
    async def main() -> None:
        proxy = await CuttableProxy(sim.port).start()
        try:
            async with Mirror(proxy.url, points=["plant/#"], backoff=(0.05, 0.2)) as plant:
                events = plant.events(current=False)
                version_at_cut = plant.version or 0
                proxy.refusing = True
                proxy.cut()
                await asyncio.sleep(1.0)  # the plant goes on changing meanwhile
                proxy.refusing = False
                await plant.wait_until(lambda m: m.connected and m.resumes == 1, 15)
                assert plant.resyncs == 0 and plant.connections == 2
                assert plant.version is not None and plant.version > version_at_cut + 20
                await matches_a_fresh_snapshot(plant, sim)
                kinds: list[Event] = []
                while len(kinds) < 200:
                    try:
                        event = await asyncio.wait_for(events.__anext__(), 0.01)
                    except asyncio.TimeoutError:
                        break
                    kinds.append(event)
                assert any(isinstance(e, Disconnected) and e.reconnecting for e in kinds)
                assert Connected(proxy.url, resumed=True) in kinds
        finally:
            await proxy.close()

    asyncio.run(main())


def test_a_server_restart_resyncs_the_whole_mirror(tmp_path: Path) -> None:
    async def main() -> None:
        # Restarted on its port below: one below the ephemeral range, moved only on a clash at the first start.
        first = first_start(lambda port: Server(tmp_path, *SIM, port=port).start())
        port = first.port
        try:
            async with Mirror(first.url, points=["plant/#"], backoff=(0.05, 0.3)) as plant:
                old_epoch = plant.epoch
                resynced: list[PointChange] = []
                plant.on_change(lambda c: resynced.append(c) if c.resync else None)
                await asyncio.to_thread(first.stop)
                await plant.wait_until(lambda m: not m.connected, 10)
                second = await asyncio.to_thread(Server(tmp_path, *SIM, port=port).start)
                try:
                    await plant.wait_until(lambda m: m.connected, 20)
                    assert plant.epoch != old_epoch and plant.resyncs == 1 and plant.resumes == 0
                    assert resynced and {c.point_id for c in resynced} <= set(plant.points)
                    await matches_a_fresh_snapshot(plant, second)
                finally:
                    await asyncio.to_thread(second.stop)
        finally:
            first.stop()
        assert "Traceback" not in first.output

    asyncio.run(main())


def test_alarms_arrive_listed_and_can_be_acknowledged(tmp_path: Path) -> None:
    (tmp_path / "plant.toml").write_text(ALARM_PLANT, encoding="utf-8")
    alarm_id = "plant/chiller-1/supply_temp:high"

    async def main(server: Server) -> None:
        async with Mirror(server.url, points=["plant/chiller-1/#"]) as plant:
            await plant.wait_until(lambda m: alarm_id in m.alarms, 15)
            alarm = plant.alarms[alarm_id]
            assert alarm.kind == "high" and alarm.state == "active" and alarm.needs_ack and alarm.limit == -100.0
            assert plant.alarm_seq and plant.alarm_seq >= 1
            transitions = plant.alarm_changes(current=False)
            await plant.ack(alarm_id)
            change = await asyncio.wait_for(transitions.__anext__(), 10)
            assert isinstance(change, AlarmChange) and change.alarm is not None
            assert change.alarm.state == "acknowledged" and change.seq and change.previous == alarm
            assert plant.alarms[alarm_id].state == "acknowledged" and plant.alarm_seq == change.seq
            with pytest.raises(ServerError) as e:
                await plant.ack("plant/chiller-1/supply_temp:low")
            assert e.value.code == "unknown_alarm"
        # A new client sees the acknowledged alarm in its snapshot; one outside the point sees none.
        async with Mirror(server.url, points=["plant/chiller-1/supply_temp"]) as again:
            assert again.alarms[alarm_id].state == "acknowledged"
        async with Mirror(server.url, points=["plant/ahu-1/#"]) as elsewhere:
            assert not elsewhere.alarms
        # Shelve and unshelve: the answer gives the end, the transitions come as alarm changes.
        async with Mirror(server.url, points=["plant/chiller-1/#"]) as plant:
            transitions = plant.alarm_changes(current=False)
            until = await plant.shelve(alarm_id, 5, comment="sensor swap")
            shelved = await asyncio.wait_for(transitions.__anext__(), 10)
            assert shelved.alarm is not None and shelved.alarm.state == "shelved"
            assert until is not None and shelved.alarm.extra.get("shelved_until") == until
            await plant.unshelve(alarm_id)
            back = await asyncio.wait_for(transitions.__anext__(), 10)
            assert back.alarm is not None and back.alarm.state != "shelved"
            with pytest.raises(ServerError) as e:
                await plant.unshelve(alarm_id)
            assert e.value.code == "wrong_state"

    with running(tmp_path, "--config", "plant.toml") as server:
        asyncio.run(main(server))


def test_alarm_transitions_missed_while_away_are_replayed_on_resume(tmp_path: Path) -> None:
    (tmp_path / "plant.toml").write_text(ALARM_PLANT, encoding="utf-8")
    alarm_id = "plant/chiller-1/supply_temp:high"

    async def main(server: Server) -> None:
        proxy = await CuttableProxy(server.port).start()
        try:
            async with Mirror(proxy.url, points=["plant/chiller-1/#"], backoff=(0.05, 0.2)) as away:
                await away.wait_until(lambda m: alarm_id in m.alarms, 15)
                assert away.alarms[alarm_id].state == "active"
                seq_before = away.alarm_seq
                transitions = away.alarm_changes(current=False)
                proxy.refusing = True
                proxy.cut()
                async with Mirror(server.url, points=["plant/chiller-1/supply_temp"]) as operator:
                    await operator.ack(alarm_id)  # while the first client is away
                proxy.refusing = False
                change = await asyncio.wait_for(transitions.__anext__(), 15)
                assert away.resumes == 1 and away.resyncs == 0
                # A replayed transition (with its seq), not a replaced list.
                assert change.alarm is not None and change.alarm.state == "acknowledged" and not change.resync
                assert seq_before is not None and change.seq == seq_before + 1 == away.alarm_seq
                assert away.alarms[alarm_id].state == "acknowledged"
        finally:
            await proxy.close()

    with running(tmp_path, "--config", "plant.toml") as server:
        asyncio.run(main(server))


def test_tokens_go_in_the_header_the_subprotocol_or_the_query_and_a_bad_one_is_a_clear_error(tmp_path: Path) -> None:
    from hvac_push.transport.auth import hash_token

    token = "a-test-token-" + "x" * 30
    (tmp_path / "tokens.toml").write_text(
        f'[[token]]\nname = "client-test"\nsha256 = "{hash_token(token)}"\npoints = ["plant/chiller-1/#"]\n',
        encoding="utf-8",
    )

    async def main(server: Server) -> None:
        for via in ("header", "subprotocol", "query"):
            async with Mirror(server.url, points=["plant/chiller-1/#"], token=token, token_via=via) as plant:
                assert plant.points, via
        async with Mirror(server.url, token=token) as granted:  # no patterns: the server subscribes the grant
            assert granted.points and all(p.startswith("plant/chiller-1/") for p in granted.points)
        async with Mirror(server.url, points=["plant/chiller-1/#"], token=lambda: token) as plant:
            with pytest.raises(ServerError) as e:
                await plant.ack("plant/chiller-1/supply_temp:high")
            assert e.value.code == "forbidden"
        for bad in ("wrong-token", None):
            with pytest.raises(AuthenticationError) as refused:
                async with Mirror(server.url, token=bad):
                    pass
            assert refused.value.status == 401 and not refused.value.retryable
            assert "authentication failed" in str(refused.value)
            assert ("token was refused" if bad else "requires a token") in str(refused.value)
        with pytest.raises(HandshakeError) as e400:
            async with Mirror(server.url, points=["not/a/valid/pattern"], token=token):
                pass
        assert e400.value.status == 400

    with running(tmp_path, "--auth-token-file", "tokens.toml", "--sim-units", "2") as server:
        asyncio.run(main(server))


def test_a_refusal_on_reconnect_ends_the_streams_with_that_error(tmp_path: Path) -> None:
    from hvac_push.transport.auth import hash_token

    token = "first-token-" + "q" * 30
    for name, admitted in (("old.toml", token), ("new.toml", "another-token-" + "r" * 30)):
        (tmp_path / name).write_text(
            f'[[token]]\nname = "x"\nsha256 = "{hash_token(admitted)}"\npoints = ["#"]\n', encoding="utf-8"
        )

    async def main() -> None:
        # Restarted on its port below: one below the ephemeral range, moved only on a clash at the first start.
        first = first_start(
            lambda port: Server(tmp_path, "--auth-token-file", "old.toml", "--sim-units", "1", port=port).start()
        )
        port = first.port
        second: Server | None = None
        try:
            async with Mirror(first.url, token=token, backoff=(0.05, 0.2)) as plant:
                changes = plant.changes(current=False)
                await asyncio.to_thread(first.stop)
                # The token was revoked while the client was away: it must not retry forever.
                second = await asyncio.to_thread(
                    Server(tmp_path, "--auth-token-file", "new.toml", "--sim-units", "1", port=port).start
                )
                with pytest.raises(AuthenticationError):
                    async for _ in changes:
                        pass
                assert isinstance(plant.failure, AuthenticationError) and not plant.connected
                with pytest.raises(AuthenticationError):
                    await plant.ping()
        finally:
            first.stop()
            if second is not None:
                await asyncio.to_thread(second.stop)

    asyncio.run(main())


def test_without_reconnect_a_drop_ends_the_streams_and_close_never_hangs(sim: Server) -> None:
    async def main() -> None:
        proxy = await CuttableProxy(sim.port).start()
        try:
            async with Mirror(proxy.url, points=["plant/chiller-1/#"], reconnect=False) as plant:
                events = plant.events(current=False)
                proxy.cut()
                with pytest.raises(ConnectionLost):
                    async for _ in events:
                        pass
            assert plant.failure is not None and not plant.connected
            # Closing while reconnecting (nothing to reconnect to) returns at once.
            retrying = Mirror(proxy.url, backoff=(0.05, 0.1))
            await retrying.start()
            proxy.refusing = True
            proxy.cut()
            await retrying.wait_until(lambda m: not m.connected, 10)
            await asyncio.sleep(0.3)
            await asyncio.wait_for(retrying.close(), 5)
            assert retrying.failure is None
        finally:
            await proxy.close()

    asyncio.run(main())


def test_nobody_listening_is_an_oserror_at_start():
    async def main() -> None:
        with pytest.raises(OSError):
            with refused_port() as port:
                await Mirror(f"ws://127.0.0.1:{port}/ws").start()

    asyncio.run(main())


def test_the_readme_example_runs_as_printed(sim: Server, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [part.split("```")[0] for part in readme.split("```python\n")[1:]]
    (code,) = [block for block in blocks if "hvac_push.client" in block]
    assert len([line for line in code.splitlines() if line.strip()]) <= 10  # "in under ten lines"
    script = tmp_path / "readme_example.py"
    script.write_text(code.replace("ws://localhost:8080/ws", sim.url), encoding="utf-8")
    lines, _ = process_lines([sys.executable, str(script)], count=30)
    statuses = {line.rsplit(" ", 1)[-1] for line in lines}
    assert len(lines) == 30 and all(line.startswith("plant/") for line in lines) and statuses <= {"ok", "stale"}, lines


# -- without a server --------------------------------------------------------------


def test_null_values_unknown_statuses_and_unknown_fields_are_kept_not_fatal():
    state = MirrorState()
    changes = state.receive(
        {
            "type": "snapshot", "epoch": "e1", "version": 5, "alarm_seq": 0, "alarms": [], "future": 1,
            "points": {
                "plant/a/never": {"value": None, "unit": "", "ts": None, "version": 0, "status": "down"},
                "plant/a/t": {"value": 1.5, "unit": "°C", "ts": 1.0, "version": 4, "status": "ok", "quality": 0.9},
                "plant/a/odd": "not an object",
            },
        },
        opening=True,
    )
    assert {c.point_id for c in changes if isinstance(c, PointChange)} == {"plant/a/never", "plant/a/t"}
    assert state.points["plant/a/never"].value is None and state.points["plant/a/never"].status == "down"
    assert state.points["plant/a/t"].extra == {"quality": 0.9}
    assert state.points["plant/a/t"].to_wire()["quality"] == 0.9
    assert state.receive({"type": "something_new", "x": 1}, opening=False) == []
    assert state.receive({"type": "update", "epoch": "e1", "version": 6, "points": {
        "plant/a/never": {"value": 3, "status": "ok", "version": 6}}}, opening=False)
    updated = state.points["plant/a/never"]  # the update replaced what was asserted None above
    assert updated.value == 3 and state.version == 6
    # A subscribe answer adds points but does not move the resume version.
    state.receive({"type": "snapshot", "epoch": "e1", "version": 99, "points": {
        "plant/b/x": {"value": 1, "version": 7}}}, opening=False)
    assert "plant/a/t" in state.points and "plant/b/x" in state.points and state.version == 6
    # An alarm of a kind and state this client never heard of.
    (change,) = state.receive({"type": "alarm", "seq": 3, "alarm": {
        "id": "plant/a/t:melting", "point": "plant/a/t", "kind": "melting", "state": "pending"}}, opening=False)
    assert isinstance(change, AlarmChange) and state.alarms["plant/a/t:melting"].state == "pending"
    assert state.receive({"type": "alarm", "seq": 4, "alarm": {"id": "plant/a/t:melting", "state": "normal"}},
                         opening=False)
    assert not state.alarms and state.alarm_seq == 4


def test_a_resync_snapshot_replaces_points_and_alarms():
    state = MirrorState()
    state.receive({"type": "snapshot", "epoch": "e1", "version": 5, "alarm_seq": 2,
                   "alarms": [{"id": "plant/a/t:high", "point": "plant/a/t", "state": "active"}],
                   "points": {"plant/a/t": {"value": 1, "version": 5}, "plant/a/gone": {"value": 2, "version": 3}}},
                  opening=True)
    changes = state.receive({"type": "snapshot", "epoch": "e2", "version": 1, "resync": True, "alarm_seq": 0,
                             "alarms": [], "points": {"plant/a/t": {"value": 1, "version": 1}}}, opening=True)
    assert state.epoch == "e2" and state.version == 1 and state.alarm_seq == 0 and state.resyncs == 1
    assert set(state.points) == {"plant/a/t"} and not state.alarms
    assert all(getattr(c, "resync") for c in changes) and len(changes) == 3


def test_an_alarm_list_replaces_the_alarms_and_sets_the_seq():
    state = MirrorState()
    state.receive({"type": "snapshot", "epoch": "e", "version": 1, "alarm_seq": 5, "points": {},
                   "alarms": [{"id": "p/a/t:high", "point": "p/a/t", "state": "active"},
                              {"id": "p/a/t:stale", "point": "p/a/t", "state": "returned"}]}, opening=True)
    changes = state.receive({"type": "alarms", "resync": True, "alarm_seq": 9, "alarms": [
        {"id": "p/a/t:high", "point": "p/a/t", "state": "acknowledged"}]}, opening=False)
    assert state.alarm_seq == 9 and {a.id: a.state for a in state.alarms.values()} == {"p/a/t:high": "acknowledged"}
    assert {(c.alarm_id, c.alarm.state if c.alarm else None) for c in changes if isinstance(c, AlarmChange)} == {
        ("p/a/t:stale", None), ("p/a/t:high", "acknowledged")}


def test_the_handshake_url_keeps_the_plus_wildcard_and_encodes_the_hash():
    url = _with_query("ws://h:1/ws?x=1&points=old", {"points": "plant/+/t,plant/#", "since": "5"})
    assert url == "ws://h:1/ws?x=1&points=plant/+/t,plant/%23&since=5"
    with pytest.raises(ValueError):
        Mirror("http://h/ws")


def test_changes_conflate_per_point_for_a_slow_reader():
    async def main() -> None:
        mirror = Mirror("ws://h:1/ws")
        stream = mirror.changes(current=False)
        state = MirrorState()
        for version in (1, 2, 3):
            mirror._dispatch(state.receive({"type": "update", "epoch": "e", "version": version, "points": {
                "plant/a/t": {"value": version, "version": version}, f"plant/a/v{version}": {"value": 0}}},
                opening=False))
        got = [await stream.__anext__() for _ in range(4)]
        assert [c.point_id for c in got] == ["plant/a/t", "plant/a/v1", "plant/a/v2", "plant/a/v3"]
        assert got[0].value == 3 and got[0].previous is None  # newest value, first "before"
        await mirror.close()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    asyncio.run(main())



def test_mirror_reassembles_a_snapshot_the_server_sent_in_fragments(tmp_path: Path) -> None:
    # 1,000 units: thousands of points, a snapshot above the server's fragment threshold.
    with running(tmp_path, "--sim-seed", "5", "--sim-units", "1000", "--sim-rate", "200") as server:
        deadline = time.monotonic() + 30
        while len(json.dumps(server.snapshot())) <= STREAM_THRESHOLD:  # the simulator's first values
            assert time.monotonic() < deadline, "the simulated plant never grew past the threshold"
            time.sleep(0.2)

        async def main() -> None:
            async with Mirror(server.url) as plant:
                assert len(plant.points) > 3000
                await matches_a_fresh_snapshot(plant, server, timeout=30)

        asyncio.run(main())
