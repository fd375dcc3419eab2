"""Hypothesis-generated frames against a live server: every one is answered, nothing breaks.

The gateway runs in its own thread and event loop, so hypothesis can drive a plain
synchronous client (the ``websockets`` sync client) example by example.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from carousel_gateway.app import Gateway
from tests.integration.conftest import gateway_config

KNOWN_REPLIES = {
    "machine_status",
    "command_result",
    "subscription_confirmed",
    "unsubscription_confirmed",
    "status_broadcast",
    "pong",
    "error",
    "move_completed",
    "move_failed",
    "machine_event",
}


class ThreadedGateway:
    """A real gateway on its own loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.gateway = Gateway(gateway_config())
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        assert self.gateway.websocket is not None
        return f"ws://127.0.0.1:{self.gateway.websocket.port}"


@pytest.fixture(scope="module")
def live() -> Iterator[ThreadedGateway]:
    with ThreadedGateway() as running:
        yield running


@pytest.fixture(scope="module")
def session(live: ThreadedGateway) -> Iterator[ClientConnection]:
    with connect(live.url) as connection:
        assert json.loads(connection.recv(5))["type"] == "welcome"
        yield connection


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=12,
)
machine_ids = st.sampled_from(["machine_1", "machine_2", "nope", ""]) | json_values
frames = st.one_of(
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["get_status", "send_command", "subscribe", "unsubscribe", "ping", "bogus"]
            )
        },
        optional={
            "machine_id": machine_ids,
            # Move arguments stay out of the valid range: the fuzz must not drive the machines.
            "command": st.sampled_from([0, 2, 255, -1, "1", None])
            | st.fixed_dictionaries(
                {"command": json_values.filter(lambda v: v != 1), "argument": json_values}
            ),
            "argument": st.integers(min_value=31) | st.integers(max_value=0) | json_values,
            "subscription_type": st.sampled_from(["status_updates", "command_results", "x"]),
            "machine_ids": st.lists(machine_ids, max_size=3) | json_values,
            "request_id": json_values,
        },
    ).map(json.dumps),
)


def _exchange(connection: ClientConnection, frame: str) -> None:
    """Send one frame, then a marked ping; everything up to its pong must be well formed."""
    connection.send(frame)
    connection.send(json.dumps({"type": "ping", "request_id": "marker"}))
    while True:
        reply = json.loads(connection.recv(5))
        assert reply["type"] in KNOWN_REPLIES, reply
        if reply["type"] == "error":
            assert reply["code"] and reply["error"]
        if reply.get("request_id") == "marker" and reply["type"] == "pong":
            return


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(frame=frames)
def test_generated_frames_never_break_the_session(session: ClientConnection, frame: str) -> None:
    _exchange(session, frame)


def test_machines_were_never_moved_and_others_are_served(live: ThreadedGateway) -> None:
    # The fuzz sent no valid move, and the server still serves new sessions normally.
    for server in live.gateway.simulators.values():
        assert server.model.moves_started == 0
    with connect(live.url) as connection:
        assert json.loads(connection.recv(5))["type"] == "welcome"
        connection.send(json.dumps({"type": "get_status", "machine_id": "machine_1"}))
        assert json.loads(connection.recv(5))["raw_status"] == 21
