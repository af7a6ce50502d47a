"""hvac_push.transport.protocol (resume) and hvac_push.core.hub (changed_since), as a property: whatever the
interleaving of publishes, disconnects and resumes, a client's reconstructed state equals the hub's for its subscription."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from hvac_push.core.points import Pattern, Sample, Subscription
from hvac_push.testing import server_messages
from hvac_push.transport.protocol import PushServerProtocol
from tests.test_delivery import Setup

POINTS = [f"p/{unit}/{name}" for unit in ("a", "b") for name in ("t", "f", "k")]
SUBSCRIPTIONS = ["#", "p/a/#", "p/+/t", "p/b/k"]

actions = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(POINTS), st.integers(-50, 50)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("disconnect")),
        st.tuples(st.just("resume"), st.booleans()),
    ),
    max_size=60,
)


class Client:
    """Rebuilds state from the messages a connection receives."""

    def __init__(self, setup: Setup, subscription: str):
        self.setup = setup
        self.subscription = subscription
        self.state: dict[str, object] = {}
        self.version: int | None = None
        self.epoch: str | None = None
        self.proto: PushServerProtocol | None = None
        #: What the current (or last) connection received; replaced on each connect.
        self.transport = StringTransport()
        self.read = 0

    def connect(self, right_epoch: bool = True) -> None:
        path = f"/ws?points={quote(self.subscription, safe='/+')}"  # '#' must travel as %23
        if self.version is not None:
            epoch = self.epoch if right_epoch else "other-epoch"
            path += f"&since={self.version}&epoch={epoch}"
        self.proto, self.transport = self.setup.connect(path)
        self.read = 0
        self.absorb()

    def absorb(self) -> None:
        messages = server_messages(self.transport.value())
        for message in messages[self.read :]:
            if message["type"] == "snapshot":
                self.state = {}
            if message["type"] in ("snapshot", "update"):
                self.state.update({k: v["value"] for k, v in message["points"].items()})
                self.version = message["version"]
                self.epoch = message["epoch"]
        self.read = len(messages)

    def disconnect(self) -> None:
        if self.proto is not None:
            self.absorb()
            self.proto.connectionLost(Failure(ConnectionDone()))
            self.proto = None


def expected(setup: Setup, subscription: str) -> dict[str, object]:
    sub = Subscription.of([Pattern.parse(subscription)])
    return {p.point_id: p.value for p in setup.hub.points(sub)}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SUBSCRIPTIONS), actions)
def test_resume_reconstructs_exactly_the_hubs_state(subscription, steps):
    setup = Setup()
    ts = [0.0]

    def publish(point: str, value: int) -> None:
        ts[0] += 1
        setup.hub.publish(Sample(point, value, "", ts[0]))

    publish("p/a/t", 0)
    client = Client(setup, subscription)
    client.connect()
    for step in steps:
        if step[0] == "publish":
            publish(step[1], step[2])
        elif step[0] == "flush":
            setup.clock.advance(0)
            if client.proto is not None:
                client.absorb()
                assert client.state == expected(setup, subscription)
        elif step[0] == "disconnect":
            client.disconnect()
        elif step[0] == "resume":
            client.disconnect()
            client.connect(right_epoch=step[1])
            assert client.state == expected(setup, subscription)
            first = server_messages(client.transport.value())[0]
            assert first["type"] == ("update" if step[1] else "snapshot")
            assert first.get("resync", False) is (not step[1])
    if client.proto is None:
        client.connect()
    setup.clock.advance(0)
    client.absorb()
    assert client.state == expected(setup, subscription)
