"""Pick jobs' WebSocket messages: they join the one parser (a coded error for anything
wrong, naming the key), the server's messages and the AsyncAPI document; the spec's own
messages parse exactly as before."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carousel_gateway import wire
from carousel_gateway.api.asyncapi import build_asyncapi
from carousel_gateway.client import parse_server_message
from carousel_gateway.wire import (
    CancelJob,
    ConfirmPick,
    ErrorCode,
    GatewayError,
    GetJobs,
    JobAccepted,
    JobEventKind,
    JobEventMessage,
    JobLineState,
    JobLineView,
    JobState,
    JobStats,
    JobView,
    PauseJob,
    ResumeJob,
    RouteStop,
    SubmitJob,
    Subscribe,
    SubscriptionConfirmed,
    SubscriptionType,
    parse_client_message,
)

JOB_TYPES = ("submit_job", "get_jobs", "confirm_pick", "pause_job", "resume_job", "cancel_job")

SUBMIT = {
    "type": "submit_job",
    "request_id": "r1",
    "job_id": "ORD-1",
    "workstation_id": "station_1",
    "priority": 5,
    "lines": [
        {
            "line_id": "1",
            "machine_id": "machine_1",
            "position": 14,
            "quantity": 2,
            "sku": "TORN-M6",
            "description": "Tornillo M6",
            "order_id": "PED-7",
        }
    ],
}


def job_view() -> JobView:
    return JobView(
        job_id="ORD-1",
        workstation_id="station_1",
        priority=5,
        state=JobState.ACTIVE,
        lines=[
            JobLineView(
                line_id="1",
                machine_id="machine_1",
                position=14,
                quantity=2,
                state=JobLineState.PRESENTED,
            )
        ],
        route=[RouteStop(machine_id="machine_1", position=14)],
        stats=JobStats(),
        created_at="2026-12-05T12:00:00.000Z",
    )


def test_every_job_message_type_is_known_to_the_parser():
    assert set(JOB_TYPES) <= set(wire.CLIENT_MESSAGE_TYPES)
    names = {model.__name__ for model in wire.CLIENT_MESSAGES}
    assert {"SubmitJob", "GetJobs", "ConfirmPick", "PauseJob", "ResumeJob", "CancelJob"} <= names
    assert {"JobAccepted", "Jobs", "PickConfirmed", "JobUpdate", "JobEventMessage"} <= {
        model.__name__ for model in wire.SERVER_MESSAGES
    }


def test_submit_job_parses_with_its_lines():
    message = parse_client_message(json.dumps(SUBMIT))
    assert isinstance(message, SubmitJob)
    assert message.request_id == "r1"
    assert message.lines[0].sku == "TORN-M6"
    assert message.priority == 5


@pytest.mark.parametrize(
    ("data", "model"),
    [
        ({"type": "get_jobs", "workstation_id": "station_1", "state": "active"}, GetJobs),
        (
            {"type": "confirm_pick", "job_id": "J", "line_id": "1", "quantity_picked": 1},
            ConfirmPick,
        ),
        ({"type": "pause_job", "job_id": "J", "reason": "break"}, PauseJob),
        ({"type": "resume_job", "job_id": "J"}, ResumeJob),
        ({"type": "cancel_job", "job_id": "J"}, CancelJob),
    ],
)
def test_job_requests_parse(data, model):
    assert isinstance(parse_client_message(json.dumps(data)), model)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({**SUBMIT, "colour": "red"}, "colour: unknown key"),
        ({**SUBMIT, "priority": 10}, "priority"),
        ({**SUBMIT, "lines": [{**SUBMIT["lines"][0], "bin": 3}]}, "lines.0.bin: unknown key"),
        ({**SUBMIT, "lines": [{"line_id": "1"}]}, "lines.0.machine_id"),
        ({"type": "get_jobs", "state": "sleeping"}, "state"),
        ({"type": "confirm_pick", "job_id": "J", "line_id": "1"}, "quantity_picked"),
        ({"type": "confirm_pick", "job_id": "", "line_id": "1", "quantity_picked": 1}, "job_id"),
    ],
)
def test_a_bad_job_message_is_invalid_message_format_naming_the_key(data, named):
    with pytest.raises(GatewayError) as caught:
        parse_client_message(json.dumps(data))
    assert caught.value.code is ErrorCode.INVALID_MESSAGE_FORMAT
    assert named in caught.value.message


def test_job_events_subscription_takes_workstation_ids():
    message = parse_client_message(
        json.dumps(
            {
                "type": "subscribe",
                "subscription_type": "job_events",
                "workstation_ids": ["station_1"],
            }
        )
    )
    assert isinstance(message, Subscribe)
    assert message.subscription_type is SubscriptionType.JOB_EVENTS
    assert message.workstation_ids == ["station_1"]


def test_spec_subscription_confirmation_encodes_as_before():
    confirmed = SubscriptionConfirmed(
        subscription_type=SubscriptionType.STATUS_UPDATES,
        machine_ids=["machine_1"],
        timestamp="2026-12-05T12:00:00.000Z",
    )
    assert json.loads(confirmed.encode()) == {
        "type": "subscription_confirmed",
        "subscription_type": "status_updates",
        "machine_ids": ["machine_1"],
        "timestamp": "2026-12-05T12:00:00.000Z",
    }


job_like = st.fixed_dictionaries(
    {"type": st.sampled_from(JOB_TYPES)},
    optional={
        "job_id": st.none() | st.text(max_size=3) | st.integers(),
        "workstation_id": st.none() | st.text(max_size=3),
        "line_id": st.text(max_size=3) | st.integers(),
        "quantity_picked": st.integers() | st.text(max_size=2),
        "priority": st.integers(-2, 12),
        "state": st.sampled_from(["queued", "active", "x"]),
        "lines": st.lists(
            st.dictionaries(
                st.sampled_from(["line_id", "machine_id", "position", "quantity", "x"]),
                st.integers() | st.text(max_size=3),
            ),
            max_size=3,
        ),
    },
)


@settings(max_examples=300)
@given(job_like)
def test_any_job_like_message_parses_or_gives_invalid_message_format(value):
    try:
        message = parse_client_message(json.dumps(value))
    except GatewayError as exc:
        assert exc.code is ErrorCode.INVALID_MESSAGE_FORMAT
    else:
        assert message.type == value["type"]


def test_server_job_messages_round_trip_through_the_client_parser():
    accepted = JobAccepted(
        job=job_view(), created=True, request_id="r1", timestamp="2026-12-05T12:00:00.000Z"
    )
    event = JobEventMessage(
        event=JobEventKind.STOP_PRESENTED,
        workstation_id="station_1",
        job=job_view(),
        timestamp="2026-12-05T12:00:00.000Z",
    )
    for message in (accepted, event):
        assert parse_server_message(message.encode()) == message


def test_asyncapi_documents_the_job_messages():
    document = build_asyncapi()
    messages = document["components"]["messages"]
    for name in (*JOB_TYPES, "job_accepted", "jobs", "pick_confirmed", "job_update", "job_event"):
        assert name in messages, name
    assert document["operations"]["receive_submit_job"]["reply"]["messages"][0] == {
        "$ref": "#/channels/gateway/messages/job_accepted"
    }
    assert "send_job_event" in document["operations"]
