"""The test brokers themselves (tests/brokers.py): a port taken between picking and starting is not a failure."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.brokers import Mosquitto, mosquitto_binary


@pytest.mark.skipif(mosquitto_binary() is None, reason="needs mosquitto (scripts/bootstrap --test)")
def test_a_broker_whose_picked_port_was_taken_meanwhile_starts_on_another(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = Mosquitto(tmp_path, port=taken)
        with pytest.raises(RuntimeError, match="Address already in use"):
            broker.start()  # a broker whose port was handed out must not move
        broker.start(retry_on_clash=True)
        try:
            assert broker.port != taken
            with socket.create_connection(("127.0.0.1", broker.port), timeout=5):
                pass
        finally:
            broker.kill()
