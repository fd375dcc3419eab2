"""The frames between the gateway and its OPC UA process (``own_process``): what is written
is read back whole, in order, and the end of the stream is None (no sockets)."""

from __future__ import annotations

import asyncio

from carousel_gateway.api.opcua.process import _frame, _read_frame
from carousel_gateway.fleet.events import Origin, OriginChannel, Snapshot, StatusChanged
from carousel_gateway.plc.connection import ConnectionState


async def test_frames_round_trip_in_order() -> None:
    snapshot = Snapshot("m1", ConnectionState.CONNECTED, position=3, raw_status=21)
    event = StatusChanged("m1", 1.5, snapshot=snapshot, previous=Snapshot("m1"))
    reply = ("reply", 7, None, ("MACHINE_NOT_READY", "interlock", ("PARADA_EMERGENCIA",)))
    origin = Origin("op", OriginChannel.OPCUA)
    reader = asyncio.StreamReader()
    for message in (("event", event), reply, ("origin", origin)):
        data = _frame(message)
        reader.feed_data(data[:3])  # a frame may arrive in pieces
        reader.feed_data(data[3:])
    reader.feed_eof()
    assert await _read_frame(reader) == ("event", event)
    assert await _read_frame(reader) == reply
    assert await _read_frame(reader) == ("origin", origin)
    assert await _read_frame(reader) is None
