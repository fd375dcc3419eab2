"""The JSON node without sockets: its Will, its retained topics, commands and results."""

from __future__ import annotations

import json

from carousel_gateway.api.mqtt.json_node import JsonNode
from carousel_gateway.api.mqtt.session import MoveRequest, Notice, Publish
from carousel_gateway.fleet.events import MoveCompleted, Snapshot, StatusChanged
from carousel_gateway.plc.connection import ConnectionState

SNAP = Snapshot("m1", connection=ConnectionState.CONNECTED, position=4, raw_status=21)


def node(**options):
    return JsonNode(group_id="site", edge_node_id="gw", machine_ids=["m1"], **options)


def test_the_will_and_the_goodbye_are_a_retained_offline_status():
    json_node = node()
    will = json_node.will()
    assert (will.topic, will.qos, will.retain) == ("carousel/site/gw/status", 1, True)
    assert json.loads(will.payload)["online"] is False
    assert json_node.disconnecting() == []  # never online: nothing to say
    status, state = json_node.connected({"m1": SNAP}, 0.0)
    assert isinstance(status, Publish) and json.loads(status.payload)["online"] is True
    assert isinstance(state, Publish) and state.retain and state.topic.endswith("/m1/state")
    assert json.loads(state.payload)["position"] == 4
    (goodbye,) = json_node.disconnecting()
    assert isinstance(goodbye, Publish) and json.loads(goodbye.payload)["online"] is False


def test_events_become_state_or_event_messages():
    json_node = node()
    json_node.connected({"m1": SNAP}, 0.0)
    moved = Snapshot("m1", connection=ConnectionState.CONNECTED, position=5, raw_status=21)
    (state,) = json_node.event(StatusChanged("m1", 1.0, snapshot=moved, previous=SNAP), moved)
    assert isinstance(state, Publish) and json.loads(state.payload)["position"] == 5
    arrival = MoveCompleted("m1", 1.0, command_id=3, position=5, duration_s=0.2)
    (event,) = json_node.event(arrival, moved)
    assert isinstance(event, Publish) and event.topic == "carousel/site/gw/m1/events"
    assert json.loads(event.payload)["type"] == "move_completed"


def test_commands_run_once_per_request_id_and_only_when_enabled():
    enabled = node(commands_enabled=True)
    command = json.dumps({"target": 7, "request_id": "a"}).encode()
    topic = "carousel/site/gw/m1/command"
    assert enabled.received(topic, command) == [MoveRequest("m1", 7, "a")]
    (again,) = enabled.received(topic, command)
    assert isinstance(again, Notice)
    for bad in (b"{", b'{"target": "7"}', b'{"target": true}', b"[]"):
        (notice,) = enabled.received(topic, bad)
        assert isinstance(notice, Notice)
    (other,) = enabled.received("carousel/site/gw/m9/command", command)
    assert isinstance(other, Notice)
    (disabled,) = node().received(topic, command)
    assert isinstance(disabled, Notice) and "disabled" in disabled.text
