"""``format = "json"``: plain JSON topics for consumers without Sparkplug (sans-I/O).

``carousel/<group>/<edge>/status``: ``{"online": ...}``, retained, the Will says offline;
``…/<machine>/state``: the ``machine_status`` message, retained, on every change;
``…/<machine>/events``: ``command_result``, ``move_completed``, ``move_failed`` and machine
events, as the WebSocket API words them; ``…/<machine>/command`` takes
``{"target": 12, "request_id": "..."}`` and ``…/<machine>/command/result`` answers it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from carousel_gateway import __version__
from carousel_gateway.api.conversions import (
    command_result,
    machine_event,
    machine_state,
    move_message,
)
from carousel_gateway.api.mqtt.session import (
    REMEMBERED_REQUEST_IDS,
    Action,
    MoveRequest,
    Notice,
    Publish,
)
from carousel_gateway.fleet.events import (
    CommandAccepted,
    ConnectionChanged,
    Event,
    MoveCompleted,
    MoveFailed,
    Snapshot,
    StatusChanged,
)
from carousel_gateway.wire import MachineStatus, utc_timestamp

__all__ = ["JSON_ROOT", "JsonNode"]

JSON_ROOT = "carousel"


class JsonNode:
    """The JSON topics of one gateway; every method returns the actions to take."""

    def __init__(
        self,
        *,
        group_id: str,
        edge_node_id: str,
        machine_ids: Sequence[str],
        commands_enabled: bool = False,
    ) -> None:
        self.base = f"{JSON_ROOT}/{group_id}/{edge_node_id}"
        self.machine_ids = list(machine_ids)
        self.commands_enabled = commands_enabled
        self.online = False
        self._request_ids: dict[str, OrderedDict[str, None]] = {
            m: OrderedDict() for m in machine_ids
        }

    @property
    def status_topic(self) -> str:
        return f"{self.base}/status"

    def topic(self, machine_id: str, leaf: str) -> str:
        return f"{self.base}/{machine_id}/{leaf}"

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(f"{self.base}/+/command", 1)]

    def _status(self, online: bool) -> Publish:
        body = {"online": online, "version": __version__, "timestamp": utc_timestamp()}
        return Publish(self.status_topic, json.dumps(body).encode(), 1, True, "status")

    def will(self) -> Publish:
        return self._status(False)

    def connected(self, snapshots: Mapping[str, Snapshot], now: float) -> list[Action]:
        self.online = True
        actions: list[Action] = [self._status(True)]
        actions += [self._state(snapshot) for snapshot in snapshots.values()]
        return actions

    def disconnecting(self) -> list[Action]:
        if not self.online:
            return []
        self.online = False
        return [self._status(False)]

    def connection_lost(self) -> None:
        self.online = False

    def _state(self, snapshot: Snapshot) -> Publish:
        message = MachineStatus(
            machine_id=snapshot.machine_id,
            **machine_state(snapshot).model_dump(),
            timestamp=utc_timestamp(snapshot.changed_at),
        )
        return Publish(
            self.topic(snapshot.machine_id, "state"),
            message.encode().encode(),
            1,
            True,
            "state",
            snapshot.machine_id,
        )

    def event(self, event: Event, snapshot: Snapshot) -> list[Action]:
        """A fleet event: a new retained state, or a message on ``…/events``."""
        if not self.online:
            return []
        if isinstance(event, StatusChanged):
            return [self._state(event.snapshot)]
        text: str | None = None
        match event:
            case CommandAccepted():
                text = command_result(event, None).encode()
            case MoveCompleted() | MoveFailed():
                text = move_message(event, None).encode()
            case _:
                message = machine_event(event)
                text = None if message is None else message.encode()
        actions: list[Action] = []
        if isinstance(event, ConnectionChanged):
            actions.append(self._state(snapshot))
        if text is not None:
            actions.append(
                Publish(
                    self.topic(event.machine_id, "events"),
                    text.encode(),
                    1,
                    False,
                    "event",
                    event.machine_id,
                )
            )
        return actions

    def received(self, topic: str, payload: bytes) -> list[Action]:
        prefix, _sep, rest = topic.partition(f"{self.base}/")
        machine_id, _sep, leaf = rest.partition("/")
        if prefix or leaf != "command" or machine_id not in self._request_ids:
            return [Notice(f"message on {topic!r} ignored: not a command topic of a machine")]
        try:
            body = json.loads(payload)
            target = body["target"]
            request_id = body.get("request_id")
            if (
                not isinstance(target, int)
                or isinstance(target, bool)
                or not (request_id is None or isinstance(request_id, str))
            ):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            return [
                Notice(
                    f"command for {machine_id} ignored: it must be JSON "
                    '{"target": <integer>, "request_id": "<text>"}'
                )
            ]
        if not self.commands_enabled:
            return [
                Notice(
                    f"command for {machine_id} ignored: commands over MQTT are disabled "
                    "([mqtt] commands_enabled = false)"
                )
            ]
        if request_id:
            seen = self._request_ids[machine_id]
            if request_id in seen:
                return [
                    Notice(
                        f"command for {machine_id} with request id {request_id!r} ignored: "
                        "that request id was already run"
                    )
                ]
            seen[request_id] = None
            while len(seen) > REMEMBERED_REQUEST_IDS:
                seen.popitem(last=False)
        return [MoveRequest(machine_id, target, request_id or None)]

    def result(self, request: MoveRequest, result: str, reason: str, now: float) -> list[Action]:
        """A command's fate on ``…/command/result`` (accepted, then arrived or failed)."""
        if not self.online:
            return []
        body = {
            "machine_id": request.machine_id,
            "request_id": request.request_id,
            "result": result,
            "reason": reason,
            "target": request.target,
            "timestamp": utc_timestamp(now),
        }
        return [
            Publish(
                self.topic(request.machine_id, "command/result"),
                json.dumps(body).encode(),
                1,
                False,
                "result",
                request.machine_id,
            )
        ]
