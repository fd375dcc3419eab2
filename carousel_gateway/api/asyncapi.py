"""An AsyncAPI 3.0 document of the WebSocket API, generated from the message models.

Generated, never hand-written, so it cannot drift from what the server accepts and sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from carousel_gateway import __version__
from carousel_gateway import wire as m

__all__ = [
    "build_asyncapi",
]

_REF = "#/components/schemas/{model}"

#: Client message → the server's direct reply (plus ``error`` for any of them).
_REPLIES: dict[type[BaseModel], tuple[type[BaseModel], ...]] = {
    m.GetStatus: (m.MachineStatus, m.FleetStatus),
    m.SendCommand: (m.CommandResult,),
    m.Subscribe: (m.SubscriptionConfirmed, m.StatusBroadcast),
    m.Unsubscribe: (m.UnsubscriptionConfirmed,),
    m.Ping: (m.Pong,),
    m.GetHistory: (m.History,),
    m.GetCounters: (m.Counters,),
    m.SubmitJob: (m.JobAccepted,),
    m.GetJobs: (m.Jobs,),
    m.ConfirmPick: (m.PickConfirmed,),
    m.PauseJob: (m.JobUpdate,),
    m.ResumeJob: (m.JobUpdate,),
    m.CancelJob: (m.JobUpdate,),
}

_SUMMARIES: dict[type[BaseModel], str] = {
    m.GetStatus: "Ask for one machine's status (or every machine's without machine_id).",
    m.SendCommand: "Send a command (1 = move to a bucket) to one machine.",
    m.Subscribe: (
        "Subscribe to status_updates, command_results or all_events (machine_ids), or to "
        "job_events (workstation_ids)."
    ),
    m.Unsubscribe: "Remove subscriptions (same fields as subscribe).",
    m.Ping: "Application-level ping; answered with pong.",
    m.GetHistory: "Journal entries (commands, moves, events), newest first, paged by cursor.",
    m.GetCounters: "Maintenance counters per machine (moves, travel, faults...).",
    m.History: "A page of journal entries; next_cursor continues to older ones.",
    m.Counters: "Maintenance counters per machine, kept in the journal.",
    m.Welcome: "Sent on connect: server version, capabilities and machines.",
    m.MachineStatus: "One machine's live state (reply to get_status).",
    m.FleetStatus: "Every machine's live state (get_status without machine_id).",
    m.CommandResult: "The PLC took the command (or it was skipped: already there).",
    m.MoveCompletedMessage: "The requested bucket arrived at the window.",
    m.MoveFailedMessage: "The move ended without arriving, and why.",
    m.SubscriptionConfirmed: "A subscribe was applied.",
    m.UnsubscriptionConfirmed: "An unsubscribe was applied.",
    m.StatusBroadcast: "State of subscribed machines that changed.",
    m.MachineEvent: "Connected, disconnected, fault raised or cleared (all_events).",
    m.ErrorMessage: "A request could not be served; code from the error table.",
    m.Pong: "Reply to ping.",
    m.SubmitJob: (
        "Submit a pick job to a workstation (operator role). The same job_id with the same "
        "content again is the same job; with other content, JOB_CONFLICT; bad lines, "
        "INVALID_JOB naming each."
    ),
    m.GetJobs: "Pick jobs, newest first, optionally of one workstation and in one state.",
    m.ConfirmPick: (
        "Confirm a presented line (operator role): quantity_picked, with a reason when "
        "less than asked (a short pick)."
    ),
    m.PauseJob: "Pause a pick job (operator role): its carousels take manual moves again.",
    m.ResumeJob: "Resume a paused pick job (operator role): re-planned from a fresh reading.",
    m.CancelJob: "Cancel a pick job (operator role): its open lines become cancelled.",
    m.JobAccepted: "The job as queued (created false: an idempotent repeat of an existing job).",
    m.Jobs: "Pick jobs with their lines, planned route and stats.",
    m.PickConfirmed: "The line is confirmed (journalled); the job as it is now.",
    m.JobUpdate: "Reply to pause_job, resume_job and cancel_job: the job as it is now.",
    m.JobEventMessage: (
        "A pick job changed (job_events subscribers of its workstation): queued, started, "
        "stop presented, line confirmed, paused (with the reason), resumed, completed, "
        "cancelled."
    ),
}


def _message_name(model: type[BaseModel]) -> str:
    default = model.model_fields["type"].default
    if isinstance(default, str):
        base = default
    else:  # client messages: the Literal in the annotation
        base = model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    return "fleet_status" if model is m.FleetStatus else base


def build_asyncapi() -> dict[str, Any]:
    """The whole document as a dict (JSON-serialisable)."""
    models = [*m.CLIENT_MESSAGES, *m.SERVER_MESSAGES]
    _, schema = models_json_schema(
        [
            (model, "validation" if model in m.CLIENT_MESSAGES else "serialization")
            for model in models
        ],
        ref_template=_REF,
    )
    schemas = schema.get("$defs", {})
    messages = {
        _message_name(model): {
            "name": _message_name(model),
            "title": model.__name__,
            "summary": _SUMMARIES[model],
            "contentType": "application/json",
            "payload": {"$ref": _REF.format(model=model.__name__)},
        }
        for model in models
    }

    def channel_message(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/channels/gateway/messages/{_message_name(model)}"}

    operations: dict[str, Any] = {}
    for request, replies in _REPLIES.items():
        name = _message_name(request)
        answers: list[type[BaseModel]] = [*replies, m.ErrorMessage]
        operations[f"receive_{name}"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/gateway"},
            "summary": _SUMMARIES[request],
            "messages": [channel_message(request)],
            "reply": {
                "channel": {"$ref": "#/channels/gateway"},
                "messages": [channel_message(r) for r in answers],
            },
        }
    for model in (
        m.Welcome,
        m.StatusBroadcast,
        m.MoveCompletedMessage,
        m.MoveFailedMessage,
        m.CommandResult,
        m.MachineEvent,
        m.JobEventMessage,
    ):
        operations[f"send_{_message_name(model)}"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/gateway"},
            "summary": _SUMMARIES[model],
            "messages": [channel_message(model)],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "carousel-gateway WebSocket API",
            "version": __version__,
            "description": (
                "Real-time status and commands for vertical storage carousels. JSON text "
                "frames; every client message may carry request_id, echoed by its direct reply. "
                "Timestamps are UTC ISO 8601 with milliseconds and Z. Pick jobs (submit_job "
                "... job_event) are served when welcome lists the pick_jobs capability. "
                "Error codes: "
                + ", ".join(code.value for code in m.ErrorCode)
                + "."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:8765",
                "protocol": "ws",
                "description": "Default. Auth (when configured): Authorization: Bearer TOKEN "
                "or ?token=TOKEN on the handshake.",
            }
        },
        "channels": {
            "gateway": {
                "address": "/",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            }
        },
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
