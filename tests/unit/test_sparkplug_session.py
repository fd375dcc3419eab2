"""The Sparkplug B edge node session, without sockets: births, seq, aliases, change-only
DDATA, DDEATH/DBIRTH, rebirth, DCMD and the primary host's STATE."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.api.mqtt.codec import DataType, Metric, decode_payload, encode_payload
from carousel_gateway.api.mqtt.device import DEVICE_METRICS, CommandResult, DeviceModel
from carousel_gateway.api.mqtt.session import (
    EdgeNodeSession,
    MoveRequest,
    NodeState,
    Notice,
    Publish,
    Reconnect,
    device_aliases,
)
from carousel_gateway.fleet.events import (
    CommandAccepted,
    MoveCompleted,
    Origin,
    Snapshot,
    StatusChanged,
)
from carousel_gateway.plc.connection import ConnectionState

IDLE = 0b0001_0101  # READY, remote, e-stop released
T0 = 1_700_000_000.0


def snapshot(machine_id="m1", *, position=3, raw=IDLE, connection=ConnectionState.CONNECTED):
    return Snapshot(machine_id, connection=connection, position=position, raw_status=raw)


def node(machines=("m1", "m2"), **options):
    session = EdgeNodeSession(
        group_id="site",
        edge_node_id="cell_a",
        machine_ids=list(machines),
        version="9.9",
        instance="host/1",
        **options,
    )
    models = {m: DeviceModel(snapshot(m), started_at=T0) for m in machines}
    for machine_id, model in models.items():
        session.update(machine_id, model.values(), alive=model.alive, now=T0)
    return session, models


def publishes(actions):
    return [a for a in actions if isinstance(a, Publish)]


def feed(session, model, event, now=T0 + 1):
    assert model.apply(event)
    return session.update(model.machine_id, model.values(), alive=model.alive, now=now)


def status_changed(model, **changes):
    before = model.snapshot
    after = snapshot(
        before.machine_id,
        **{
            "position": before.position,
            "raw": before.raw_status,
            "connection": before.connection,
            **changes,
        },
    )
    return StatusChanged(model.machine_id, T0, snapshot=after, previous=before)


def command(alias_or_name, datatype, value):
    name, alias = (alias_or_name, None) if isinstance(alias_or_name, str) else (None, alias_or_name)
    return Metric(name, alias, datatype, value)


def test_subscriptions_come_before_births_and_name_ncmd_and_dcmd():
    session, _models = node()
    assert session.subscriptions() == [
        ("spBv1.0/site/NCMD/cell_a", 1),
        ("spBv1.0/site/DCMD/cell_a/+", 1),
    ]
    assert session.state is NodeState.OFFLINE


def test_births_nbirth_seq_0_then_a_dbirth_per_device_with_every_metric_aliased():
    session, _models = node()
    actions = publishes(session.connected(bd_seq=7, now=T0))
    assert [(a.kind, a.topic) for a in actions] == [
        ("NBIRTH", "spBv1.0/site/NBIRTH/cell_a"),
        ("DBIRTH", "spBv1.0/site/DBIRTH/cell_a/m1"),
        ("DBIRTH", "spBv1.0/site/DBIRTH/cell_a/m2"),
    ]
    assert all(a.qos == 0 and not a.retain for a in actions)
    nbirth = decode_payload(actions[0].payload)
    assert nbirth.seq == 0
    by_name = {m.name: m for m in nbirth.metrics}
    assert by_name["bdSeq"].value == 7 and by_name["bdSeq"].datatype == DataType.INT64
    assert by_name["Node Control/Rebirth"].value is False
    assert by_name["Properties/Version"].value == "9.9"
    dbirths = [decode_payload(a.payload) for a in actions[1:]]
    assert [d.seq for d in dbirths] == [1, 2]
    aliases = [m.alias for d in dbirths for m in d.metrics] + [
        m.alias for m in nbirth.metrics if m.alias is not None
    ]
    assert len(aliases) == len(set(aliases))  # unique within the node
    m1 = {m.name: m for m in dbirths[0].metrics}
    assert [m.name for m in dbirths[0].metrics] == [name for name, _t in DEVICE_METRICS]
    assert all(m.value is not None for m in dbirths[0].metrics)
    assert m1["Position"].value == 3 and m1["RawStatus"].value == IDLE
    assert m1["Status/EStopPressed"].value is False  # the active-low bit is set: released
    assert m1["Status/Ready"].value is True
    assert m1["Link/State"].value == "connected"
    assert m1["Move/State"].value == "idle"
    assert {m.datatype for m in dbirths[0].metrics} <= {3, 4, 11, 12, 13}


def test_ddata_carries_only_changed_metrics_by_alias():
    session, models = node()
    session.connected(bd_seq=0, now=T0)
    model = models["m1"]
    (ddata,) = publishes(feed(session, model, status_changed(model, position=4)))
    assert ddata.topic == "spBv1.0/site/DDATA/cell_a/m1"
    payload = decode_payload(ddata.payload)
    aliases = device_aliases(0)
    assert payload.seq == 3
    assert all(m.name is None for m in payload.metrics)
    changed = {m.alias: m.value for m in payload.metrics}
    # Position, and the targets that follow it while idle.
    assert changed == {
        aliases["Position"]: 4,
        aliases["Target"]: 4,
        aliases["Move/Target"]: 4,
        aliases["Command/MoveTo"]: 4,
    }
    # The same values again publish nothing.
    assert session.update("m1", model.values(), alive=True, now=T0 + 2) == []


def test_estop_pressed_is_the_inverse_of_the_active_low_bit():
    session, models = node()
    session.connected(bd_seq=0, now=T0)
    model = models["m1"]
    (ddata,) = publishes(feed(session, model, status_changed(model, raw=IDLE & ~0b1_0000)))
    changed = {m.alias: m.value for m in decode_payload(ddata.payload).metrics}
    aliases = device_aliases(0)
    assert changed[aliases["Status/EStopPressed"]] is True
    assert changed[aliases["RawStatus"]] == IDLE & ~0b1_0000


@given(st.integers(1, 700))
def test_seq_counts_every_message_mod_256(changes):
    session, models = node(machines=("m1",))
    births = publishes(session.connected(bd_seq=0, now=T0))
    seqs = [decode_payload(p.payload).seq for p in births]
    model = models["m1"]
    for _ in range(changes):
        actions = feed(
            session, model, status_changed(model, position=1 + (model.snapshot.position % 29))
        )
        seqs += [decode_payload(p.payload).seq for p in publishes(actions)]
    assert seqs == [i % 256 for i in range(len(seqs))]


def test_a_link_down_publishes_its_state_then_ddeath_after_device_death_s_then_dbirth():
    session, models = node(device_death_s=10)
    session.connected(bd_seq=0, now=T0)
    model = models["m1"]
    (ddata,) = publishes(
        feed(session, model, status_changed(model, connection=ConnectionState.DISCONNECTED))
    )
    assert ddata.kind == "DDATA"
    assert session.next_deadline() == T0 + 11
    assert session.tick(T0 + 10.9) == []
    (ddeath,) = publishes(session.tick(T0 + 11))
    assert ddeath.kind == "DDEATH" and ddeath.topic == "spBv1.0/site/DDEATH/cell_a/m1"
    assert decode_payload(ddeath.payload).metrics == ()
    assert decode_payload(ddeath.payload).seq is not None
    up = status_changed(model, connection=ConnectionState.CONNECTED)
    (dbirth,) = publishes(feed(session, model, up, now=T0 + 12))
    assert dbirth.kind == "DBIRTH"
    assert {m.name: m.value for m in decode_payload(dbirth.payload).metrics}[
        "Counters/Disconnections"
    ] == 1


def test_a_link_back_before_device_death_s_is_no_death():
    session, models = node(device_death_s=10)
    session.connected(bd_seq=0, now=T0)
    model = models["m1"]
    feed(session, model, status_changed(model, connection=ConnectionState.ERROR))
    (ddata,) = publishes(
        feed(session, model, status_changed(model, connection=ConnectionState.CONNECTED))
    )
    assert ddata.kind == "DDATA"
    assert session.next_deadline() is None


def test_under_ha_the_nbirth_names_the_owner_after_the_other_node_metrics():
    plain, _models = node()
    owned, _models = node(owner=("gw-b", 2))
    before = decode_payload(publishes(plain.connected(bd_seq=1, now=T0))[0].payload).metrics
    nbirth = decode_payload(publishes(owned.connected(bd_seq=1, now=T0))[0].payload).metrics
    by_name = {m.name: m for m in nbirth}
    assert (by_name["Owner/Instance"].value, by_name["Owner/Instance"].datatype) == (
        "gw-b",
        DataType.STRING,
    )
    assert (by_name["Owner/Epoch"].value, by_name["Owner/Epoch"].datatype) == (2, DataType.INT64)
    # Appended: every other node metric keeps its alias (a host's tag paths stay put).
    assert [(m.name, m.alias) for m in nbirth[: len(before)]] == [
        (m.name, m.alias) for m in before
    ]
    assert len({m.alias for m in nbirth if m.alias is not None}) == len(nbirth) - 1
    assert "Owner/Epoch" not in {m.name for m in before}  # no [ha]: no owner metrics


def test_ndeath_carries_the_bdseq_and_no_seq():
    session, _models = node()
    will = session.will(5, 123)
    assert (will.topic, will.qos, will.retain) == ("spBv1.0/site/NDEATH/cell_a", 1, False)
    payload = decode_payload(will.payload)
    assert payload.seq is None
    assert [(m.name, m.value) for m in payload.metrics] == [("bdSeq", 5)]
    session.connected(bd_seq=5, now=T0)
    (death,) = session.disconnecting(T0 + 1)
    assert isinstance(death, Publish) and death.kind == "NDEATH"
    assert decode_payload(death.payload).metrics[0].value == 5
    assert session.state is NodeState.OFFLINE
    assert session.update("m1", {}, alive=True, now=T0 + 2) == []


def test_rebirth_is_honoured_and_throttled():
    session, _models = node(rebirth_min_interval_s=5)
    session.connected(bd_seq=1, now=T0)
    ncmd = encode_payload(
        [Metric("Node Control/Rebirth", None, DataType.BOOLEAN, True)], timestamp=1
    )
    again = publishes(session.received("spBv1.0/site/NCMD/cell_a", ncmd, T0 + 6))
    assert [a.kind for a in again] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert decode_payload(again[0].payload).seq == 0
    assert {m.name: m.value for m in decode_payload(again[0].payload).metrics}["bdSeq"] == 1
    throttled = session.received("spBv1.0/site/NCMD/cell_a", ncmd, T0 + 7)
    assert [type(a) for a in throttled] == [Notice]
    assert session.next_deadline() == T0 + 11
    assert [a.kind for a in publishes(session.tick(T0 + 11))] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    # By alias, as a host that saw the NBIRTH sends it.
    by_alias = encode_payload([Metric(None, 1, DataType.BOOLEAN, True)], timestamp=1)
    assert publishes(session.received("spBv1.0/site/NCMD/cell_a", by_alias, T0 + 20))


def dcmd(session, machine_id, *metrics, now=T0):
    data = encode_payload(list(metrics), timestamp=1)
    return session.received(f"spBv1.0/site/DCMD/cell_a/{machine_id}", data, now)


def test_dcmd_move_to_by_alias_with_a_request_id_runs_once():
    session, _models = node(commands_enabled=True)
    session.connected(bd_seq=0, now=T0)
    aliases = device_aliases(1)
    move = command(aliases["Command/MoveTo"], DataType.INT32, 12)
    rid = command(aliases["Command/RequestId"], DataType.STRING, "r-1")
    assert dcmd(session, "m2", move, rid) == [MoveRequest("m2", 12, "r-1")]
    (notice,) = dcmd(session, "m2", move, rid)
    assert isinstance(notice, Notice) and "already" in notice.text
    # Without a request id, each one runs; by name works too.
    by_name = command("Command/MoveTo", DataType.INT32, 5)
    assert dcmd(session, "m2", by_name) == [MoveRequest("m2", 5, None)]
    assert dcmd(session, "m2", by_name) == [MoveRequest("m2", 5, None)]


def test_dcmd_unknown_metrics_and_wrong_types_are_ignored_with_a_notice():
    session, _models = node(commands_enabled=True)
    wrong = command("Command/MoveTo", DataType.STRING, "12")
    (notice,) = dcmd(session, "m1", wrong)
    assert isinstance(notice, Notice) and "Int32" in notice.text
    unknown = command("Position", DataType.INT32, 3)
    (notice,) = dcmd(session, "m1", unknown)
    assert isinstance(notice, Notice)
    (notice,) = dcmd(session, "nope", command("Command/MoveTo", DataType.INT32, 3))
    assert isinstance(notice, Notice)
    (notice,) = session.received("spBv1.0/site/DCMD/cell_a/m1", b"\xff\xff", T0)
    assert isinstance(notice, Notice)


def test_dcmd_is_ignored_while_commands_are_disabled():
    session, _models = node(commands_enabled=False)
    (notice,) = dcmd(session, "m1", command("Command/MoveTo", DataType.INT32, 3))
    assert isinstance(notice, Notice) and "disabled" in notice.text


def test_command_results_go_out_as_ddata():
    session, models = node()
    session.connected(bd_seq=0, now=T0)
    model = models["m1"]
    model.command_result(
        request_id="r-9",
        result=CommandResult.REFUSED,
        reason="MACHINE_NOT_READY",
        target=8,
        at=T0 + 1,
    )
    (ddata,) = publishes(session.update("m1", model.values(), alive=True, now=T0 + 1))
    aliases = device_aliases(0)
    values = {m.alias: m.value for m in decode_payload(ddata.payload).metrics}
    assert values[aliases["Command/Last/RequestId"]] == "r-9"
    assert values[aliases["Command/Last/Result"]] == "refused"
    assert values[aliases["Command/Last/Reason"]] == "MACHINE_NOT_READY"
    assert values[aliases["Command/Last/Target"]] == 8
    assert values[aliases["Command/Last/Timestamp"]] == round((T0 + 1) * 1000)


def test_move_state_follows_the_move():
    _session, models = node()
    model = models["m1"]
    accepted = CommandAccepted(
        "m1",
        T0,
        command_id=1,
        command=1,
        argument=9,
        result="ok",
        skipped=False,
        origin=Origin(),
        latency_s=0.01,
    )
    model.apply(accepted)
    assert model.values()["Move/State"] == "sent" and model.values()["Target"] == 9
    model.apply(status_changed(model, raw=IDLE | 0b10))
    assert model.values()["Move/State"] == "moving"
    model.apply(MoveCompleted("m1", T0, command_id=1, position=9, duration_s=1.0, travelled=6))
    values = model.values()
    assert values["Move/State"] == "arrived" and values["Counters/MovesCompleted"] == 1
    assert values["Counters/PositionsTravelled"] == 6


def state_message(online, timestamp):
    return json.dumps({"online": online, "timestamp": timestamp}).encode()


def test_a_primary_host_holds_births_until_online_and_offline_takes_the_node_off():
    session, _models = node(primary_host_id="scada")
    assert ("spBv1.0/STATE/scada", 1) in session.subscriptions()
    assert session.connected(bd_seq=2, now=T0) == []
    assert session.state is NodeState.WAITING_FOR_HOST
    births = publishes(session.received("spBv1.0/STATE/scada", state_message(True, 100), T0))
    assert [a.kind for a in births] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    # An offline older than the online is stale: ignored.
    (notice,) = session.received("spBv1.0/STATE/scada", state_message(False, 50), T0)
    assert isinstance(notice, Notice)
    death, reconnect = session.received("spBv1.0/STATE/scada", state_message(False, 200), T0)
    assert isinstance(death, Publish) and death.kind == "NDEATH"
    assert isinstance(reconnect, Reconnect)
    assert session.state is NodeState.OFFLINE
    # Back on a new connection: the retained offline keeps it waiting.
    assert session.connected(bd_seq=3, now=T0 + 1) == []
    assert session.received("spBv1.0/STATE/scada", state_message(False, 200), T0 + 1) == []
    assert publishes(session.received("spBv1.0/STATE/scada", state_message(True, 300), T0 + 2))


def test_a_state_that_is_not_json_is_ignored():
    session, _models = node(primary_host_id="scada")
    session.connected(bd_seq=2, now=T0)
    (notice,) = session.received("spBv1.0/STATE/scada", b"ONLINE", T0)
    assert isinstance(notice, Notice)
    assert session.state is NodeState.WAITING_FOR_HOST


# -- a host's view of any sequence of what can happen ---------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("move"), st.sampled_from(["m1", "m2"]), st.integers(1, 30)),
        st.tuples(st.just("bits"), st.sampled_from(["m1", "m2"]), st.integers(0, 255)),
        st.tuples(
            st.just("link"),
            st.sampled_from(["m1", "m2"]),
            st.sampled_from(list(ConnectionState)),
        ),
        st.tuples(st.just("wait"), st.floats(0, 3)),
        st.tuples(st.just("rebirth")),
        st.tuples(st.just("reconnect")),
    ),
    max_size=60,
)


class Host:
    """What a Sparkplug host checks (as tests/mqtt/consumer.js does with Tahu)."""

    def __init__(self) -> None:
        self.seq: int | None = None
        self.aliases: dict[str, set[int]] = {}
        self.bd_seq: int | None = None

    def see(self, publish: Publish) -> None:
        payload = decode_payload(publish.payload)
        kind = publish.kind
        device = publish.topic.split("/")[4] if kind.startswith("D") else None
        if kind == "NDEATH":
            assert payload.seq is None
            assert [m.value for m in payload.metrics if m.name == "bdSeq"] == [self.bd_seq]
            self.seq = None
            self.aliases.clear()
            return
        if kind == "NBIRTH":
            assert payload.seq == 0
            self.bd_seq = next(m.value for m in payload.metrics if m.name == "bdSeq")
            self.aliases.clear()
        else:
            assert self.seq is not None, f"{kind} before NBIRTH"
            assert payload.seq == (self.seq + 1) % 256
        self.seq = payload.seq
        if kind == "DBIRTH":
            assert all(m.name and m.alias is not None for m in payload.metrics)
            self.aliases[device] = {m.alias for m in payload.metrics}
        elif kind == "DDATA":
            assert device in self.aliases, "DDATA before DBIRTH"
            assert payload.metrics, "an empty DDATA"
            assert all(m.name is None and m.alias in self.aliases[device] for m in payload.metrics)
        elif kind == "DDEATH":
            assert device in self.aliases, "DDEATH of a device not born"
            del self.aliases[device]


@given(operations)
def test_any_sequence_keeps_the_sparkplug_contract(ops):
    session, models = node(device_death_s=1.0, rebirth_min_interval_s=2.0)
    host = Host()
    now = T0
    bd_seq = 0

    def run(actions):
        for action in actions:
            if isinstance(action, Publish):
                host.see(action)

    def change(machine_id, **changes):
        model = models[machine_id]
        event = status_changed(model, **changes)
        if not event.snapshot.same_state(model.snapshot):
            run(feed(session, model, event, now))

    run(session.connected(bd_seq, now))
    for op in ops:
        now += 0.01
        match op:
            case ("move", machine_id, position):
                change(machine_id, position=position)
            case ("bits", machine_id, raw):
                change(machine_id, raw=raw)
            case ("link", machine_id, state):
                change(machine_id, connection=state)
            case ("wait", seconds):
                now += seconds
                run(session.tick(now))
            case ("rebirth",):
                run(session.rebirth(now))
            case ("reconnect",):
                run(session.disconnecting(now))
                bd_seq += 1
                run(session.connected(bd_seq, now))
        # Every device born is alive or has a DDEATH timer running.
        deadline = session.next_deadline()
        for machine_id, model in models.items():
            if machine_id in host.aliases and not model.alive:
                assert deadline is not None and deadline <= now + 1.0
