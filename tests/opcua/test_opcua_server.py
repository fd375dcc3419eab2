"""The OPC UA server against an independent client (node-opcua) and real simulators.

Each test starts a real gateway (embedded simulators over TCP, the fleet, the journal, the
OPC UA server on a free loopback port) and drives ``client.js`` in a Node process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carousel_gateway.sim.carousel import Fault
from carousel_gateway.sim.server import FaultMode
from tests.opcua.conftest import OPERATOR, VIEWER, ClientCertificate, NodeClient

NS = "ns=2;s="  # the namespace index of urn:carousel-gateway:machines (checked below)
OBJECT = 1  # NodeClass Object
VARIABLE = 2


def node(path: str) -> str:
    return f"{NS}{path}"


async def connect(
    client: NodeClient,
    gateway: Any,
    certificate: ClientCertificate,
    user: tuple[str, str],
    **options: Any,
) -> dict[str, Any]:
    return await client.request(
        "connect",
        url=gateway.opcua.url,
        user=user[0],
        password=user[1],
        **{**certificate.options(), **options},
    )


async def trusted_client(
    node_client: Any, gateway: Any, tmp_path: Path, user: tuple[str, str] = OPERATOR
) -> NodeClient:
    certificate = ClientCertificate(tmp_path / f"client-{user[0]}")
    certificate.trust(Path(gateway.config.opcua.pki_dir))
    client = await node_client()
    answer = await connect(client, gateway, certificate, user)
    assert answer["ok"], answer
    return client


async def test_browse_machines_and_their_children(opcua_gateway, node_client, tmp_path) -> None:
    from tests.opcua.conftest import opcua_config

    gateway = await opcua_gateway(opcua_config(tmp_path / "server-pki", machines=2))
    client = await trusted_client(node_client, gateway, tmp_path)

    namespaces = await client.request("read", nodeIds=["ns=0;i=2255"])
    assert namespaces["values"][0]["value"][2] == "urn:carousel-gateway:machines"
    machines = await client.request("browse", nodeId=node("Machines"))
    assert sorted(r["browseName"] for r in machines["references"] if r["nodeClass"] == OBJECT) == [
        "machine_1",
        "machine_2",
    ]
    children = await client.request("browse", nodeId=node("machine_1"))
    by_name = {r["browseName"]: r["nodeId"] for r in children["references"]}
    for name in (
        "Position",
        "TargetPosition",
        "MoveState",
        "StatusWord",
        "Ready",
        "EmergencyStopPressed",
        "LinkUp",
        "TelemetrySource",
        "LastResultCode",
        "LastResultMessage",
        "Identification",
        "Counters",
        "MoveTo",
    ):
        assert by_name[name] == node(f"machine_1.{name}"), name
    identification = await client.request("browse", nodeId=node("machine_1.Identification"))
    assert {"Name", "Description", "Kind"} <= {
        r["browseName"] for r in identification["references"]
    }

    simulator = gateway.simulators["machine_1"]
    read = await client.request(
        "read",
        nodeIds=[
            node("machine_1.Position"),
            node("machine_1.LinkUp"),
            node("machine_1.Identification.Kind"),
            node("machine_1.Identification.Name"),
            node("machine_1.EmergencyStopPressed"),
            node("machine_1.StatusWord"),
            node("machine_1.MoveState"),
        ],
    )
    position, link_up, kind, name, estop, status_word, move_state = read["values"]
    assert position["status"] == "Good"
    assert position["value"] == simulator.model.position_index + 1
    assert position["sourceTimestamp"] is not None
    assert link_up["value"] is True
    assert kind["value"] == "Simulator" and name["value"] == "Carrusel Principal"
    assert estop["value"] is False
    assert status_word["value"] == simulator.model.status_byte()
    assert move_state["value"] == 0  # Idle


async def test_secure_by_default_endpoints(opcua_gateway, node_client, tmp_path) -> None:
    gateway = await opcua_gateway()
    client = await node_client()
    answer = await client.request("endpoints", url=gateway.opcua.url)
    assert answer["ok"], answer
    endpoints = answer["endpoints"]
    assert {e["mode"] for e in endpoints} == {"SignAndEncrypt"}  # no None endpoint
    assert {e["policy"].rpartition("#")[2] for e in endpoints} == {
        "Basic256Sha256",
        "Aes256_Sha256_RsaPss",
    }
    assert all(e["tokens"] == ["UserName"] for e in endpoints)  # no anonymous


async def test_unsecured_channel_cannot_log_in(opcua_gateway, node_client, tmp_path) -> None:
    """A channel without security (policy None) is refused at login even when the client
    skips the endpoint check: no password crosses the network in clear."""
    gateway = await opcua_gateway()
    client = await node_client()
    answer = await client.request(
        "connect",
        url=gateway.opcua.url,
        user=OPERATOR[0],
        password=OPERATOR[1],
        mode="None",
        policy="None",
        endpointMustExist=False,
    )
    assert not answer["ok"]


async def test_operator_with_aes256_policy(opcua_gateway, node_client, tmp_path) -> None:
    gateway = await opcua_gateway()
    certificate = ClientCertificate(tmp_path / "client")
    certificate.trust(Path(gateway.config.opcua.pki_dir))
    client = await node_client()
    answer = await connect(client, gateway, certificate, OPERATOR, policy="Aes256_Sha256_RsaPss")
    assert answer["ok"], answer
    read = await client.request("read", nodeIds=[node("machine_1.LinkUp")])
    assert read["values"][0]["value"] is True


async def test_wrong_password_is_refused(opcua_gateway, node_client, tmp_path) -> None:
    gateway = await opcua_gateway()
    certificate = ClientCertificate(tmp_path / "client")
    certificate.trust(Path(gateway.config.opcua.pki_dir))
    client = await node_client()
    answer = await connect(client, gateway, certificate, (OPERATOR[0], "not-the-password"))
    assert not answer["ok"]
    assert "BadUserAccessDenied" in answer["error"]
    unknown = await connect(client, gateway, certificate, ("nobody", OPERATOR[1]))
    assert "BadUserAccessDenied" in unknown["error"]


async def test_untrusted_certificate_is_refused_until_trusted(
    opcua_gateway, node_client, tmp_path
) -> None:
    gateway = await opcua_gateway()
    pki = Path(gateway.config.opcua.pki_dir)
    certificate = ClientCertificate(tmp_path / "client")
    client = await node_client()
    answer = await connect(client, gateway, certificate, OPERATOR)
    assert not answer["ok"]
    rejected = list((pki / "rejected").iterdir())
    assert len(rejected) == 1 and rejected[0].read_bytes() == certificate.der

    # Trusting it is copying it to trusted/: no restart.
    rejected[0].rename(pki / "trusted" / rejected[0].name)
    again = await connect(client, gateway, certificate, OPERATOR)
    assert again["ok"], again


async def test_viewer_browses_and_subscribes_but_cannot_move(
    opcua_gateway, node_client, tmp_path
) -> None:
    gateway = await opcua_gateway()
    client = await trusted_client(node_client, gateway, tmp_path, VIEWER)
    subscribed = await client.request(
        "subscribe", nodeIds=[node("machine_1.Position")], interval=20
    )
    assert subscribed["ok"], subscribed
    assert subscribed["revisedPublishingInterval"] == 100  # min_publishing_interval_ms
    first = await client.wait_notification(lambda n: n["nodeId"] == node("machine_1.Position"))
    assert first["status"] == "Good"

    simulator = gateway.simulators["machine_1"]
    moves_before = simulator.moves_received
    answer = await client.request(
        "call", objectId=node("machine_1"), methodId=node("machine_1.MoveTo"), target=5
    )
    assert not answer["ok"] or answer["status"] != "Good"
    assert "BadUserAccessDenied" in (answer.get("error") or answer.get("status") or "")
    assert simulator.moves_received == moves_before
    await gateway.journal.flush()
    page = await gateway.journal.history("machine_1", kinds=["command"])
    assert page.rows == []


async def test_move_to_arrives_through_the_command_path(
    opcua_gateway, node_client, tmp_path
) -> None:
    gateway = await opcua_gateway()
    client = await trusted_client(node_client, gateway, tmp_path)
    await client.request(
        "subscribe", nodeIds=[node("machine_1.MoveState"), node("machine_1.Position")]
    )
    simulator = gateway.simulators["machine_1"]
    target = 12 if simulator.model.position_index + 1 != 12 else 7

    answer = await client.request(
        "call", objectId=node("machine_1"), methodId=node("machine_1.MoveTo"), target=target
    )
    assert answer["ok"], answer
    assert answer["status"] == "Good"
    assert answer["outputs"][0] == "Good"
    arrived = await client.wait_notification(
        lambda n: n["nodeId"] == node("machine_1.MoveState") and n["value"] == 3
    )
    assert arrived["status"] == "Good"
    await client.wait_notification(
        lambda n: n["nodeId"] == node("machine_1.Position") and n["value"] == target
    )
    assert simulator.model.position_index + 1 == target

    await gateway.journal.flush()
    page = await gateway.journal.history("machine_1", kinds=["command"])
    rows = page.rows
    assert len(rows) == 1
    assert rows[0]["channel"] == "opcua" and rows[0]["client"] == OPERATOR[0]
    assert rows[0]["argument"] == target and rows[0]["outcome"] == "arrived"
    read = await client.request(
        "read", nodeIds=[node("machine_1.LastResultCode"), node("machine_1.TargetPosition")]
    )
    assert read["values"][0]["value"] == "Good"
    assert read["values"][1]["value"] == target


async def test_interlocked_move_to_is_bad_invalid_state(
    opcua_gateway, node_client, tmp_path
) -> None:
    gateway = await opcua_gateway()
    client = await trusted_client(node_client, gateway, tmp_path)
    await client.request("subscribe", nodeIds=[node("machine_1.EmergencyStopPressed")])
    simulator = gateway.simulators["machine_1"]
    simulator.model.set_fault(Fault.EMERGENCY_STOP, True)
    await client.wait_notification(
        lambda n: n["nodeId"] == node("machine_1.EmergencyStopPressed") and n["value"] is True
    )
    moves_before = simulator.moves_received

    answer = await client.request(
        "call", objectId=node("machine_1"), methodId=node("machine_1.MoveTo"), target=9
    )
    assert answer["ok"], answer
    assert answer["status"] == "BadInvalidState"
    code, message = answer["outputs"]
    assert code == "BadInvalidState"
    assert message.startswith("MACHINE_NOT_READY") and "PARADA_EMERGENCIA" in message
    assert answer["diagnostics"] == [message]
    assert simulator.moves_received == moves_before

    out_of_range = await client.request(
        "call", objectId=node("machine_1"), methodId=node("machine_1.MoveTo"), target=999
    )
    assert out_of_range["status"] == "BadOutOfRange"
    assert out_of_range["outputs"][1].startswith("INVALID_COMMAND")
    assert simulator.moves_received == moves_before


async def test_link_down_is_bad_communication_error_then_recovers(
    opcua_gateway, node_client, tmp_path
) -> None:
    gateway = await opcua_gateway()
    client = await trusted_client(node_client, gateway, tmp_path)
    position = node("machine_1.Position")
    link_up = node("machine_1.LinkUp")
    await client.request("subscribe", nodeIds=[position, link_up])
    good = await client.wait_notification(lambda n: n["nodeId"] == position)
    assert good["status"] == "Good"

    simulator = gateway.simulators["machine_1"]
    mark = len(client.notifications)
    simulator.set_fault_mode(FaultMode.REFUSE)
    down = await client.wait_notification(
        lambda n: n["nodeId"] == position and n["status"] == "BadCommunicationError", start=mark
    )
    assert down["value"] is None
    link = await client.wait_notification(
        lambda n: n["nodeId"] == link_up and n["value"] is False, start=mark
    )
    assert link["status"] == "Good"  # LinkUp itself is always Good

    # A move while the link is down: Bad_CommunicationError, and nothing sent.
    moves_before = simulator.moves_received
    refused = await client.request(
        "call", objectId=node("machine_1"), methodId=node("machine_1.MoveTo"), target=3
    )
    assert refused["status"] == "BadCommunicationError"
    assert refused["outputs"][1].startswith("CONNECTION_ERROR")
    assert simulator.moves_received == moves_before

    mark = len(client.notifications)
    simulator.set_fault_mode(FaultMode.NONE)
    back = await client.wait_notification(
        lambda n: n["nodeId"] == position and n["status"] == "Good", start=mark
    )
    assert back["value"] == simulator.model.position_index + 1
    assert back["sourceTimestamp"] > good["sourceTimestamp"]
    await client.wait_notification(
        lambda n: n["nodeId"] == link_up and n["value"] is True, start=mark
    )


async def test_max_sessions_refuses_one_more(opcua_gateway, node_client, tmp_path) -> None:
    from tests.opcua.conftest import opcua_config

    gateway = await opcua_gateway(opcua_config(tmp_path / "server-pki", max_sessions=1))
    first = await trusted_client(node_client, gateway, tmp_path)
    certificate = ClientCertificate(tmp_path / "second")
    certificate.trust(Path(gateway.config.opcua.pki_dir))
    second = await node_client()
    answer = await connect(second, gateway, certificate, VIEWER)
    assert not answer["ok"]
    still = await first.request("read", nodeIds=[node("machine_1.LinkUp")])
    assert still["values"][0]["value"] is True
    await first.request("disconnect")
    # The slot is free once the server has seen the first connection close: each attempt
    # before that is refused at connect (no sleeping: the next attempt is the wait).
    for _ in range(50):
        again = await connect(second, gateway, certificate, VIEWER)
        if again["ok"]:
            break
    assert again["ok"], again


async def test_a_busy_port_names_the_setting(tmp_path) -> None:
    import socket

    import pytest

    from carousel_gateway.app import BindError, Gateway
    from tests.opcua.conftest import opcua_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = Gateway(opcua_config(tmp_path / "server-pki", port=port))
        try:
            with pytest.raises(BindError, match=r"\[opcua\] port"):
                await gateway.start()
        finally:
            await gateway.stop()


async def test_own_process_serves_values_and_moves_through_the_gateway(
    opcua_gateway, node_client, tmp_path
) -> None:
    """``own_process``: the same address space from a child process; its MoveTo still goes
    through the gateway's command path (journal, interlocks)."""
    from tests.opcua.conftest import opcua_config

    gateway = await opcua_gateway(opcua_config(tmp_path / "server-pki", own_process=True))
    assert gateway.opcua.process is not None  # a child process of its own
    client = await trusted_client(node_client, gateway, tmp_path)
    await client.request(
        "subscribe", nodeIds=[node("machine_1.MoveState"), node("machine_1.Position")]
    )
    simulator = gateway.simulators["machine_1"]
    target = 12 if simulator.model.position_index + 1 != 12 else 7
    answer = await client.request(
        "call", objectId=node("machine_1"), methodId=node("machine_1.MoveTo"), target=target
    )
    assert answer["status"] == "Good", answer
    await client.wait_notification(
        lambda n: n["nodeId"] == node("machine_1.Position") and n["value"] == target
    )
    await client.wait_notification(
        lambda n: n["nodeId"] == node("machine_1.MoveState") and n["value"] == 3
    )
    await gateway.journal.flush()
    rows = (await gateway.journal.history("machine_1", kinds=["command"])).rows
    assert [(r["channel"], r["client"], r["argument"]) for r in rows] == [
        ("opcua", OPERATOR[0], target)
    ]

    simulator.model.set_fault(Fault.EMERGENCY_STOP, True)
    await client.request("subscribe", nodeIds=[node("machine_1.EmergencyStopPressed")])
    await client.wait_notification(
        lambda n: n["nodeId"] == node("machine_1.EmergencyStopPressed") and n["value"] is True
    )
    moves_before = simulator.moves_received
    refused = await client.request(
        "call", objectId=node("machine_1"), methodId=node("machine_1.MoveTo"), target=3
    )
    assert refused["status"] == "BadInvalidState"
    assert "PARADA_EMERGENCIA" in refused["outputs"][1]
    assert simulator.moves_received == moves_before
