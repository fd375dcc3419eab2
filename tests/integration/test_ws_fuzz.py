"""Hypothesis-generated frames against a live server: every one is answered, nothing breaks.

The gateway runs in its own thread and event loop, so hypothesis can drive a plain
synchronous client (the ``websockets`` sync client) example by example. The frames cover
every client message model (each field well typed, mistyped or missing), JSON that is not a
message, text and binary that is not JSON, and hand-picked nasties (deep nesting, huge
numbers, lone surrogates). CI runs ``FUZZ_EXAMPLES`` (10,000) derandomized cases: the same
ones every run. ``benchmarks/fuzz_long.py`` runs many more, with memory measured.

The test is bounded by its number of examples, not by the suite's wall-clock timeout: its
pytest timeout is a budget per example (a busy CI machine runs it 2-3 times slower), and a
hung server is caught by each reply's own 5 s wait. Nothing in the gateway's thread, nor
the client's, may touch the global ``random`` module while hypothesis draws (it warns when
the state changes under it): keepalive pings, which draw their payload from it, are off.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from carousel_gateway.app import Gateway
from carousel_gateway.errors import ErrorCode
from tests.integration.conftest import gateway_config

#: Generated cases per CI run (the issue asks for at least 10,000).
FUZZ_EXAMPLES = int(os.environ.get("CAROUSEL_FUZZ_EXAMPLES", "10000"))
#: Seconds of pytest timeout per example: ~4 ms each on a quiet 2-core machine, ~9 ms
#: with both cores busy; 60 ms leaves room for slower machines under more load.
SECONDS_PER_EXAMPLE = 0.06
FUZZ_TIMEOUT_S = 60 + FUZZ_EXAMPLES * SECONDS_PER_EXAMPLE
#: No keepalive pings (websockets draws their payload from the global ``random``).
NO_PINGS_S = 3600
#: Limits out of the way: this is about input, not rates (those have their own tests).
FUZZ_LIMITS = {
    "messages_per_second": 1_000_000,
    "message_burst": 1_000_000,
    "commands_per_machine_per_second": 1_000_000,
    "command_burst": 1_000_000,
}

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
    "history",
    "counters",
}


class ThreadedGateway:
    """A real gateway on its own loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.gateway = Gateway(
            gateway_config(limits=FUZZ_LIMITS, websocket={"ping_interval_s": NO_PINGS_S})
        )
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()

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
    with connect(live.url, ping_interval=None) as connection:
        assert json.loads(connection.recv(5))["type"] == "welcome"
        yield connection


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=12,
)
machine_ids = st.sampled_from(["machine_1", "machine_2", "nope", ""]) | json_values
timestamps = (
    st.sampled_from(
        ["2025-01-27T10:30:00.000Z", "2025-01-27", "yesterday", "9999-99-99T99:99:99Z", ""]
    )
    | json_values
)
#: Move arguments stay out of the valid range (1..30): the fuzz must not drive the machines.
bad_positions = st.integers(min_value=31) | st.integers(max_value=0) | json_values
#: Every field of every client message model, well typed or not.
optional_fields = {
    "machine_id": machine_ids,
    "command": st.sampled_from([0, 2, 255, 256, -1, "1", None, 1.5, True])
    | st.fixed_dictionaries(
        {"command": json_values.filter(lambda v: v != 1), "argument": json_values}
    )
    | st.fixed_dictionaries({"command": st.just(1), "argument": bad_positions}),
    "argument": bad_positions,
    "subscription_type": st.sampled_from(["status_updates", "command_results", "all_events", "x"])
    | json_values,
    "machine_ids": st.lists(machine_ids, max_size=3) | json_values,
    "request_id": json_values | st.text(min_size=120, max_size=140),
    "timestamp": timestamps,
    "since": timestamps,
    "until": timestamps,
    "kinds": st.lists(st.sampled_from(["command", "move_completed", "fault_raised", "nope"]))
    | json_values,
    "limit": st.integers(min_value=-5, max_value=2000) | json_values,
    "cursor": st.integers(min_value=-5, max_value=2**64) | json_values,
}
message_types = (
    st.sampled_from(
        [
            "get_status",
            "send_command",
            "subscribe",
            "unsubscribe",
            "ping",
            "get_history",
            "get_counters",
            "bogus",
            "",
            "GET_STATUS",
        ]
    )
    | json_values
)
messages = st.fixed_dictionaries({"type": message_types}, optional=optional_fields)
frames = st.one_of(
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=64),  # binary frames
    st.text(max_size=64),
    json_values.map(json.dumps),
    messages.map(json.dumps),
    messages.map(lambda m: json.dumps(m).encode()),  # a valid text as a binary frame
    messages.map(lambda m: json.dumps(m)[: max(1, len(json.dumps(m)) // 2)]),  # truncated
)
#: Hand-picked frames that have broken JSON servers elsewhere.
NASTIES = [
    "[" * 5000 + "]" * 5000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    '{"type": "ping", "request_id": ' + "9" * 5000 + "}",
    '{"type": "get_history", "limit": 1e400}',
    '{"type": "ping", "request_id": "\\ud800"}',
    '{"type": "ping", "type": "bogus"}',
    '{"type": "ping"} trailing',
    "\ufeff" + '{"type": "ping"}',
    '{"type": NaN}',
    '{"type": "get_history", "since": "2025-02-30T00:00:00Z"}',
    '{"type": "send_command", "machine_id": "machine_1", "command": {"command": 1}}',
    '{"type": "subscribe", "subscription_type": "all_events", "machine_ids": '
    + json.dumps(["m"] * 10_001)
    + "}",
    b"\xff\xfe\x00",
    "",
]


CODES = {code.value for code in ErrorCode} - {ErrorCode.INTERNAL_ERROR.value}


def _exchange(connection: ClientConnection, frame: str | bytes) -> None:
    """Send one frame, then a marked ping; everything up to its pong must be well formed,
    and no error may be an INTERNAL_ERROR (an exception nobody expected)."""
    connection.send(frame)
    connection.send(json.dumps({"type": "ping", "request_id": "marker"}))
    while True:
        reply = json.loads(connection.recv(5))
        assert reply["type"] in KNOWN_REPLIES, reply
        if reply["type"] == "error":
            assert reply["code"] in CODES and reply["error"], reply
        if reply.get("request_id") == "marker" and reply["type"] == "pong":
            return


def _with_nasties(test):
    for nasty in NASTIES:
        test = example(frame=nasty)(test)
    return test


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,  # a fixed seed: CI sees the same cases every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=frames)
@_with_nasties
def test_generated_frames_never_break_the_session(
    session: ClientConnection, frame: str | bytes
) -> None:
    _exchange(session, frame)


def test_machines_were_never_moved_and_others_are_served(live: ThreadedGateway) -> None:
    # The fuzz sent no valid move, and the server still serves new sessions normally.
    for server in live.gateway.simulators.values():
        assert server.model.moves_started == 0
        assert server.moves_received == 0
    websocket = live.gateway.websocket
    assert websocket is not None and len(websocket.sessions) == 1  # the fuzzing one only
    with connect(live.url) as connection:
        assert json.loads(connection.recv(5))["type"] == "welcome"
        connection.send(json.dumps({"type": "get_status", "machine_id": "machine_1"}))
        assert json.loads(connection.recv(5))["raw_status"] == 21
