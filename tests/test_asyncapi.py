"""docs/asyncapi.yaml: valid for the official AsyncAPI parser, and true of what a running server sends and accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7
from websockets.sync.client import ClientConnection, connect

from tests.clientserver import ALARM_PLANT, ROOT, running

SPEC = ROOT / "docs" / "asyncapi.yaml"
#: Where scripts/bootstrap --test installs the parser (git-ignored).
NPM_TOOLS = ROOT / ".npm-tools"
PARSE = """
import { Parser } from "@asyncapi/parser";
import { readFileSync } from "node:fs";
const { diagnostics } = await new Parser().parse(readFileSync(process.argv[process.argv.length - 1], "utf8"));
console.log(JSON.stringify(diagnostics.map(d => ({severity: d.severity, message: d.message, path: d.path}))));
"""


def asyncapi_parser() -> Path:
    """The folder holding @asyncapi/parser, installed now if npm can."""
    if not shutil.which("node"):
        pytest.skip("node is not installed (scripts/bootstrap --test installs the AsyncAPI parser with npm)")
    if not (NPM_TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        if not shutil.which("npm"):
            pytest.skip("npm is not installed, so the AsyncAPI parser cannot be")
        subprocess.run(
            ["npm", "install", "--prefix", str(NPM_TOOLS), "--no-audit", "--no-fund", "@asyncapi/parser@3"],
            check=True, capture_output=True, timeout=600,
        )
    return NPM_TOOLS


def diagnostics(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["node", "--input-type=module", "-", str(path)], input=PARSE, cwd=asyncapi_parser(),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def test_the_official_parser_finds_no_error_in_the_document() -> None:
    found = diagnostics(SPEC)
    errors = [d for d in found if d["severity"] == 0]
    assert not errors, json.dumps(errors, indent=1)


def test_the_parser_check_can_fail(tmp_path: Path) -> None:
    """The check above is not vacuous: a broken copy gets errors."""
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    spec["channels"]["stream"]["address"] = 17
    del spec["info"]["version"]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(spec), encoding="utf-8")
    errors = [d for d in diagnostics(broken) if d["severity"] == 0]
    assert {tuple(d["path"]) for d in errors} >= {("info",), ("channels", "stream", "address")}


# -- the schemas against real traffic ---------------------------------------------------


class Schemas:
    """Validators for each message of the document, $refs resolved inside it."""

    BASE = "urn:hvac-push:asyncapi"

    def __init__(self) -> None:
        self.document = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
        registry: Registry[Any] = Registry().with_resource(self.BASE, DRAFT7.create_resource(self.document))
        self.validators = {
            name: Draft7Validator({"$ref": f"{self.BASE}#/components/messages/{name}/payload"}, registry=registry)
            for name in self.document["components"]["messages"]
        }
        self.checked: set[str] = set()

    def check(self, name: str, message: dict[str, Any]) -> dict[str, Any]:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in self.validators[name].iter_errors(message)]
        assert not errors, (name, errors, message)
        self.checked.add(name)
        return message


def receive(ws: ClientConnection, kind: str, timeout: float = 15) -> dict[str, Any]:
    """The next message of type C{kind} (updates in between are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message["type"] == kind:
            return message


def test_every_message_a_server_sends_or_accepts_fits_its_schema(tmp_path: Path) -> None:
    from hvac_push.transport.auth import hash_token

    token = "asyncapi-test-token-" + "z" * 24
    (tmp_path / "tokens.toml").write_text(
        f'[[token]]\nname = "t"\nsha256 = "{hash_token(token)}"\npoints = ["#"]\nack = true\nshelve = true\n',
        encoding="utf-8",
    )
    (tmp_path / "plant.toml").write_text(ALARM_PLANT, encoding="utf-8")
    schemas = Schemas()
    alarm_id = "plant/chiller-1/supply_temp:high"

    def send(ws: ClientConnection, name: str, message: dict[str, Any]) -> None:
        ws.send(json.dumps(schemas.check(name, message)))

    with running(tmp_path, "--config", "plant.toml", "--auth-token-file", "tokens.toml") as server:
        headers = {"Authorization": f"Bearer {token}"}
        with connect(f"{server.url}?points=plant/chiller-1/%23", additional_headers=headers,
                     subprotocols=["hvac-push.v1"], compression=None) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "hvac-push.v1"
            snapshot = schemas.check("snapshot", receive(ws, "snapshot"))
            assert snapshot["points"] and "alarm_seq" in snapshot
            schemas.check("update", receive(ws, "update"))
            # Wait for the alarm to be listed (the first sample raises it), then acknowledge it.
            while not any(a["id"] == alarm_id for a in snapshot.get("alarms", [])):
                time.sleep(0.2)
                send(ws, "resume", {"type": "resume", "since": 0, "epoch": "another-epoch"})
                snapshot = schemas.check("snapshot", receive(ws, "snapshot"))
                assert snapshot["resync"] is True
            send(ws, "ack", {"type": "ack", "alarm": alarm_id, "id": "a-1"})
            answers: dict[str, dict[str, Any]] = {}
            while len(answers) < 2:  # the transition and the confirmation, in either order
                message = json.loads(ws.recv(timeout=15))
                if message["type"] in ("acked", "alarm"):
                    answers[message["type"]] = message
            assert schemas.check("acked", answers["acked"])["id"] == "a-1"
            assert "id" not in answers["alarm"]
            transition = schemas.check("alarm", answers["alarm"])
            assert transition["alarm"]["state"] == "acknowledged"
            send(ws, "shelve", {"type": "shelve", "alarm": alarm_id, "minutes": 5, "comment": "sensor swap", "id": "sh"})
            shelved = schemas.check("shelved", receive(ws, "shelved"))
            assert shelved["id"] == "sh" and shelved["until"] is not None
            send(ws, "unshelve", {"type": "unshelve", "alarm": alarm_id, "id": "un"})
            assert schemas.check("shelved", receive(ws, "shelved"))["until"] is None
            for on in (True, False):
                send(ws, "outOfService", {"type": "out_of_service", "point": "plant/chiller-1/supply_temp", "on": on})
                assert schemas.check("outOfServiceAnswer", receive(ws, "out_of_service"))["on"] is on
            send(ws, "historyRequest", {"type": "history", "point": "plant/chiller-1/supply_temp", "since": 0, "id": 3})
            history = schemas.check("historyAnswer", receive(ws, "history"))
            assert history["samples"] and history["id"] == 3
            # The store form (the server runs with its default SQLite store in the test's folder).
            deadline = time.monotonic() + 10
            while True:  # the store gets the first samples within its flush period (0.25 s) of the start
                send(ws, "historyRangeRequest", {"type": "history", "points": ["plant/chiller-1/+"],
                                                 "from": "now-1h", "step": "1m", "agg": "max", "id": "r"})
                ranged = schemas.check("historyRangeAnswer", receive(ws, "history"))
                if ranged["points"] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert ranged["points"]["plant/chiller-1/supply_temp"] and ranged["step"] == 60 and ranged["id"] == "r"
            send(ws, "ping", {"type": "ping", "id": 7})
            assert schemas.check("pong", receive(ws, "pong"))["id"] == 7
            send(ws, "ping", {"type": "ping"})
            assert schemas.check("pong", receive(ws, "pong"))["id"] is None
            send(ws, "subscribe", {"type": "subscribe", "points": ["plant/crac-1/+"], "deadband": 0.5,
                                   "min_interval_ms": 100, "max_interval_ms": 60000, "id": "s-1"})
            subscribed = schemas.check("snapshot", receive(ws, "snapshot"))
            assert subscribed["points"] and subscribed["id"] == "s-1"
            send(ws, "unsubscribe", {"type": "unsubscribe", "points": ["plant/crac-1/+"], "id": "u-1"})
            send(ws, "auth", {"type": "auth", "token": token, "id": 4.5})
            authenticated = schemas.check("authenticated", receive(ws, "authenticated"))
            assert authenticated["ack"] is True and authenticated["id"] == 4.5
            # A resume without alarm_seq gets the alarm list; with one, the replay (nothing new here).
            send(ws, "resume", {"type": "resume", "since": snapshot["version"], "epoch": snapshot["epoch"]})
            schemas.check("alarms", receive(ws, "alarms"))
            send(ws, "resume", {"type": "resume", "since": snapshot["version"], "epoch": snapshot["epoch"],
                                "alarm_seq": transition["seq"], "id": "r-1"})
            # Pushed updates may come first; the answer is the update with the id.
            while "id" not in (update := schemas.check("update", receive(ws, "update"))):
                pass
            assert update["id"] == "r-1"
            ws.send("{not json")
            error = schemas.check("error", receive(ws, "error"))
            assert error["error"] == "bad_json"
            ws.send(json.dumps({"type": "ack", "alarm": "plant/nowhere/x:high", "id": "a-2"}))
            refused = schemas.check("error", receive(ws, "error"))
            assert (refused["error"], refused["id"]) == ("unknown_alarm", "a-2")
            # Every message the client sent was accepted: no error answered any of them.
            ws.send(json.dumps({"type": "ping", "id": "end"}))
            while (last := json.loads(ws.recv(timeout=10)))["type"] != "pong":
                assert last["type"] != "error", last

    assert schemas.checked == set(schemas.document["components"]["messages"])


def test_the_schemas_refuse_what_the_protocol_does_not_allow():
    schemas = Schemas()
    bad = {
        "subscribe": {"type": "subscribe", "points": []},
        "ping": {"type": "ping", "id": "x" * 129},
        "snapshot": {"type": "snapshot", "epoch": "e", "version": 1, "points": {"not-a-point": {}}},
        "alarm": {"type": "alarm", "seq": 1, "alarm": {"id": "a"}},
        "historyRequest": {"type": "history", "point": "a/b"},
        "historyRangeRequest": {"type": "history", "points": [], "since": 0},
        "ack": {"type": "ack", "alarm": "a", "id": {"not": "an id"}},
        "acked": {"type": "acked", "alarm": "a", "id": "x" * 129},
        "shelve": {"type": "shelve", "alarm": "a", "minutes": 0},
        "outOfService": {"type": "out_of_service", "point": "a/b/c", "on": "yes"},
    }
    for name, message in bad.items():
        assert list(schemas.validators[name].iter_errors(message)), name
    # What a later server may add is accepted: null values, unknown statuses and fields.
    schemas.check("update", {"type": "update", "epoch": "e", "version": 2, "extra": 1, "points": {
        "plant/a/b": {"value": None, "unit": "", "ts": None, "version": 2, "status": "down", "quality": 1}}})
