"""hvac_push.transport.snapshots: clients that open together share one encoded snapshot and still miss nothing."""

from __future__ import annotations

from hvac_push.core.points import Sample
from hvac_push.testing import MemoryServer
from hvac_push.transport.protocol import PushServerProtocol
from tests.test_rounds import one_turn


def test_clients_opening_within_the_window_share_one_snapshot_then_get_every_change_since_it():
    s = MemoryServer(PushServerProtocol)
    s.publish(Sample("p/u/a", 1.0, ts=1.0), Sample("p/u/b", 1.0, ts=1.0))
    first = s.connect()
    s.publish(Sample("p/u/a", 2.0, ts=2.0))  # after the shared snapshot was built
    second = s.connect(peer="127.0.0.2")
    assert s.factory.snapshots.hits == 1 and s.factory.snapshots.misses == 1
    assert first.messages()[0] == second.messages()[0]  # the same snapshot, at version 2
    assert second.messages()[0]["points"]["p/u/a"]["value"] == 1.0
    assert second.protocol.last_version == 2
    one_turn(s)  # the next reactor turn, not the poll, brings it up to date
    for c in (first, second):
        update = c.messages()[-1]
        assert update["type"] == "update" and update["points"]["p/u/a"]["value"] == 2.0
        assert c.protocol.last_version == s.hub.version


def test_a_shared_snapshot_expires_and_other_subscriptions_get_their_own():
    s = MemoryServer(PushServerProtocol)
    s.publish(Sample("p/u/a", 1.0, ts=1.0), Sample("p/v/a", 1.0, ts=1.0))
    s.connect()
    unit = s.connect("/ws?points=p/v/%23", peer="127.0.0.2")
    assert set(unit.messages()[0]["points"]) == {"p/v/a"}
    s.publish(Sample("p/u/a", 3.0, ts=3.0))
    s.advance(1.5)
    late = s.connect(peer="127.0.0.3")
    assert late.messages()[0]["points"]["p/u/a"]["value"] == 3.0  # built afresh
    assert s.factory.snapshots.hits == 0 and s.factory.snapshots.misses == 3


def test_a_resume_gets_its_own_answer_not_a_shared_snapshot():
    s = MemoryServer(PushServerProtocol)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    s.connect()
    resumed = s.connect(f"/ws?since=0&epoch={s.hub.epoch}", peer="127.0.0.2")
    assert resumed.messages()[0]["type"] == "update"
    assert s.factory.snapshots.hits == 0


def test_clients_resuming_from_another_epoch_share_one_resync_snapshot_kept_apart_from_the_opening():
    # After a restart every client comes back at once asking to resume from the old epoch.
    s = MemoryServer(PushServerProtocol)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    fresh = s.connect()
    back = [s.connect("/ws?since=7&epoch=an-old-epoch", peer=f"127.0.0.{n}") for n in (2, 3)]
    assert s.factory.snapshots.misses == 2 and s.factory.snapshots.hits == 1  # one opening, one resync, one reuse
    assert "resync" not in fresh.messages()[0]
    assert back[0].messages()[0] == back[1].messages()[0]
    for client in back:
        snapshot = client.messages()[0]
        assert snapshot["type"] == "snapshot" and snapshot["resync"] is True
        assert snapshot["points"]["p/u/a"]["value"] == 1.0
    s.publish(Sample("p/u/a", 2.0, ts=2.0))
    one_turn(s)
    assert all(c.messages()[-1]["points"]["p/u/a"]["value"] == 2.0 for c in back)


def test_a_resync_snapshot_is_rebuilt_once_the_hub_has_moved_so_a_resume_is_answered_with_the_current_state():
    s = MemoryServer(PushServerProtocol)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    s.connect("/ws?since=7&epoch=an-old-epoch")
    s.publish(Sample("p/u/a", 2.0, ts=2.0))
    later = s.connect("/ws?since=7&epoch=an-old-epoch", peer="127.0.0.2")
    assert later.messages()[0]["points"]["p/u/a"]["value"] == 2.0 and later.protocol.last_version == s.hub.version
    assert s.factory.snapshots.misses == 2 and s.factory.snapshots.hits == 0  # the stale one was not counted as used
