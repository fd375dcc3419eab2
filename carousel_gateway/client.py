"""An asyncio Python client for the gateway's WebSocket API.

One obvious entry point (like ``httpx.Client``)::

    async with CarouselClient("ws://localhost:8765", token=...) as gateway:
        status = await gateway.status("machine_1")
        outcome = await gateway.move("machine_1", 14, wait=True)
        async for event in gateway.events("all_events", ["machine_1"]):
            ...

Pick jobs (when ``welcome`` lists the ``pick_jobs`` capability)::

        accepted = await gateway.submit_job({"job_id": "ORD-1", "workstation_id": ...})
        async for event in gateway.job_events(["station_1"]):
            ...

Requests are matched to replies by ``request_id``. If the link drops, the client reconnects
with backoff, re-subscribes, and the server's fresh ``status_broadcast`` arrives on every
open ``events()`` iterator; requests in flight at that moment fail with
:class:`ConnectionLost` (a move is never re-sent). A pick confirmation is the exception: it
carries an id, so ``confirm_pick`` sends it again across the URLs until it is answered.
Results are the server's own message models from :mod:`carousel_gateway.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from carousel_gateway.wire import (
    CommandResult,
    Counters,
    ErrorMessage,
    FleetStatus,
    History,
    JobAccepted,
    JobEventMessage,
    Jobs,
    JobState,
    JobSubmission,
    JobUpdate,
    JobView,
    MachineEvent,
    MachineInfo,
    MachineStatus,
    MoveCompletedMessage,
    MoveFailedMessage,
    PickConfirmed,
    Pong,
    StatusBroadcast,
    SubscriptionConfirmed,
    SubscriptionType,
    UnsubscriptionConfirmed,
    Welcome,
)

__all__ = [
    "DEFAULT_URL",
    "AuthenticationFailed",
    "CarouselClient",
    "CarouselError",
    "ConnectionLost",
    "MoveOutcomeMessage",
    "Notification",
    "RequestTimeout",
    "ServerError",
    "parse_server_message",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "ws://localhost:8765"

_T = TypeVar("_T")

#: How a move ended, as ``move(..., wait=True)`` returns it.
MoveOutcomeMessage = MoveCompletedMessage | MoveFailedMessage
#: What ``events()`` yields: every message the gateway pushes without being asked.
Notification = (
    StatusBroadcast
    | CommandResult
    | MoveCompletedMessage
    | MoveFailedMessage
    | MachineEvent
    | JobEventMessage
    | ErrorMessage
)

_MODELS: dict[str, type[BaseModel]] = {
    "welcome": Welcome,
    "command_result": CommandResult,
    "move_completed": MoveCompletedMessage,
    "move_failed": MoveFailedMessage,
    "subscription_confirmed": SubscriptionConfirmed,
    "unsubscription_confirmed": UnsubscriptionConfirmed,
    "status_broadcast": StatusBroadcast,
    "machine_event": MachineEvent,
    "error": ErrorMessage,
    "pong": Pong,
    "history": History,
    "counters": Counters,
    "job_accepted": JobAccepted,
    "jobs": Jobs,
    "pick_confirmed": PickConfirmed,
    "job_update": JobUpdate,
    "job_event": JobEventMessage,
}


# -- errors (all in one place) ---------------------------------------------------------------


class CarouselError(Exception):
    """Base of every error this client raises."""


class ServerError(CarouselError):
    """The gateway answered with an ``error`` message (code from the API's error table)."""

    def __init__(self, message: ErrorMessage) -> None:
        super().__init__(f"{message.code.value}: {message.error}")
        self.code = message.code.value
        self.error = message.error
        self.machine_id = message.machine_id
        self.reasons = tuple(message.reasons or ())
        #: With ``NOT_ACTIVE`` (a standby of a cell): the active instance and its URL.
        self.active_instance = message.active_instance
        self.active_url = message.active_url


class ConnectionLost(CarouselError):
    """The link to the gateway dropped while a reply was awaited (a move is never re-sent)."""


class AuthenticationFailed(CarouselError):
    """The gateway refused the handshake (missing or wrong token)."""


class RequestTimeout(CarouselError):
    """No reply within the client's timeout."""


#: Answers after which a confirmation is sent again: a standby's refusal, and a gateway
#: that could not commit it (its job store unreachable for a moment).
_RETRIED_CODES = frozenset({"NOT_ACTIVE", "INTERNAL_ERROR"})
#: A link that failed (or never came): a confirmation is sent again.
_LINK_ERRORS = (OSError, TimeoutError, InvalidStatus, ConnectionClosed, CarouselError)


def parse_server_message(data: str | bytes) -> BaseModel:
    """A server frame as its typed model (``machine_status`` has two shapes)."""
    raw = json.loads(data)
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "machine_status":
        model: type[BaseModel] = FleetStatus if "machines" in raw else MachineStatus
    elif kind in _MODELS:
        model = _MODELS[kind]
    else:
        raise CarouselError(f"unexpected message from the gateway: {str(raw)[:200]}")
    return model.model_validate(raw)


class _Pending:
    """A request awaiting its direct reply, and for a move, its outcome."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, outcome: bool) -> None:
        self.reply: asyncio.Future[BaseModel] = loop.create_future()
        self.outcome: asyncio.Future[MoveOutcomeMessage] | None = (
            loop.create_future() if outcome else None
        )

    def fail(self, error: Exception) -> None:
        for future in (self.reply, self.outcome):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: nobody may be awaiting it any more


class CarouselClient:
    """A connection to the gateway that survives gateway restarts.

    ``url`` may name several gateways (a list, or one string with commas): the two
    instances of a cell. The client connects to the first that answers, reconnects to the
    others when its link drops, and when a standby refuses a command with ``NOT_ACTIVE``
    it moves to the active instance the refusal names and sends the command there (a
    standby executed nothing, so nothing runs twice).
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        token: str | None = None,
        reconnect: bool = True,
        request_timeout: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        confirm_deadline_s: float = 30.0,
    ) -> None:
        #: How long ``confirm_pick`` goes on sending a confirmation that got no answer.
        self.confirm_deadline_s = confirm_deadline_s
        urls = url.split(",") if isinstance(url, str) else list(url)
        self.urls = [u.strip() for u in urls if u.strip()]
        if not self.urls:
            raise ValueError("no gateway URL given")
        #: The gateway this client is connected (or connecting) to.
        self.url = self.urls[0]
        self.token = token
        self.reconnect = reconnect
        self.request_timeout = request_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.welcome: Welcome | None = None
        self.reconnects = 0
        self._connection: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        #: (type, machine_ids, workstation_ids) of each subscription, replayed on reconnect.
        self._subscriptions: list[tuple[SubscriptionType, list[str] | None, list[str] | None]] = []
        self._listeners: set[asyncio.Queue[Notification | CarouselError]] = set()
        self._connected = asyncio.Event()
        self._closing = False
        self._resubscriber: asyncio.Task[None] | None = None
        self._switching = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> CarouselClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        await self._open()
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._connection is not None:
            await self._connection.close()
        self._fail_pending(ConnectionLost("client closed"))

    @property
    def machines(self) -> list[MachineInfo]:
        return list(self.welcome.machines) if self.welcome else []

    async def _open(self) -> None:
        """Connect to the current URL, else to the next ones in turn (the last error is
        raised when none answers; a refused token at once)."""
        start = self.urls.index(self.url) if self.url in self.urls else 0
        failure: Exception | None = None
        for url in self.urls[start:] + self.urls[:start]:
            try:
                await self._open_one(url)
            except AuthenticationFailed:
                raise
            except (OSError, InvalidStatus, ConnectionClosed, CarouselError, TimeoutError) as exc:
                if len(self.urls) > 1:
                    log.info("gateway %s did not answer: %s", url, exc)
                failure = exc
                continue
            self.url = url
            return
        assert failure is not None
        raise failure

    async def _open_one(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            connection = await connect(
                url,
                additional_headers=headers,
                open_timeout=self.request_timeout,
                close_timeout=self.request_timeout,  # a frozen gateway does not answer a close
            )
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise AuthenticationFailed("the gateway refused the token") from None
            raise
        try:
            async with asyncio.timeout(self.request_timeout):
                frame = await connection.recv()
        except BaseException:
            await connection.close()
            raise
        welcome = parse_server_message(frame)
        if not isinstance(welcome, Welcome):
            await connection.close()
            raise CarouselError("the gateway did not send a welcome")
        self.welcome = welcome
        self._connection = connection
        self._connected.set()

    # -- requests -------------------------------------------------------------------------

    async def status(self, machine_id: str | None = None) -> MachineStatus | FleetStatus:
        """Live state of one machine (or every machine)."""
        message: dict[str, Any] = {"type": "get_status"}
        if machine_id is not None:
            message["machine_id"] = machine_id
        reply = await self._request(message)
        assert isinstance(reply, MachineStatus | FleetStatus)
        return reply

    async def command(
        self, machine_id: str, command: int, argument: int | None = None
    ) -> CommandResult:
        reply = await self._request(
            {
                "type": "send_command",
                "machine_id": machine_id,
                "command": {"command": command, "argument": argument},
            }
        )
        assert isinstance(reply, CommandResult)
        return reply

    async def move(
        self,
        machine_id: str,
        bucket: int,
        *,
        wait: bool = False,
        arrival_timeout: float | None = None,
    ) -> CommandResult | MoveOutcomeMessage:
        """Move to a bucket. With ``wait``, returns the move's outcome (arrived or failed);
        a skipped move (already there) returns its ``CommandResult`` at once."""
        message = {
            "type": "send_command",
            "machine_id": machine_id,
            "command": {"command": 1, "argument": bucket},
        }
        for hop in range(len(self.urls) + 1):
            try:
                return await self._move_once(message, wait, arrival_timeout)
            except ServerError as error:
                if error.code != "NOT_ACTIVE" or hop == len(self.urls):
                    raise
                await self._follow(error)
        raise AssertionError("unreachable")

    async def _move_once(
        self, message: dict[str, Any], wait: bool, arrival_timeout: float | None
    ) -> CommandResult | MoveOutcomeMessage:
        request_id, pending = self._register(outcome=True)
        try:
            await self._send({**message, "request_id": request_id})
            result = await self._await(pending.reply, self.request_timeout)
            assert isinstance(result, CommandResult)
            if not wait or result.data.skipped:
                return result
            assert pending.outcome is not None
            return await self._await(pending.outcome, arrival_timeout)
        finally:
            self._pending.pop(request_id, None)

    async def subscribe(
        self, subscription_type: str, machine_ids: list[str] | None = None
    ) -> SubscriptionConfirmed:
        """Subscribe; kept and replayed after a reconnect."""
        kind = SubscriptionType(subscription_type)
        reply = await self._subscribe(kind, machine_ids)
        self._subscriptions.append((kind, machine_ids, None))
        return reply

    async def history(
        self,
        machine_id: str | None = None,
        *,
        kinds: list[str] | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> History:
        """A page of the journal, newest first (``next_cursor`` continues)."""
        message: dict[str, Any] = {"type": "get_history", "limit": limit}
        for key, value in (
            ("machine_id", machine_id),
            ("kinds", kinds),
            ("since", since),
            ("until", until),
            ("cursor", cursor),
        ):
            if value is not None:
                message[key] = value
        reply = await self._request(message)
        assert isinstance(reply, History)
        return reply

    async def counters(self, machine_id: str | None = None) -> Counters:
        message: dict[str, Any] = {"type": "get_counters"}
        if machine_id is not None:
            message["machine_id"] = machine_id
        reply = await self._request(message)
        assert isinstance(reply, Counters)
        return reply

    async def ping(self) -> Pong:
        reply = await self._request({"type": "ping"})
        assert isinstance(reply, Pong)
        return reply

    # -- pick jobs ------------------------------------------------------------------------

    async def submit_job(self, job: JobSubmission | dict[str, Any]) -> JobAccepted:
        """Submit a pick job (operator role). ``created`` is False when the gateway already
        had this ``job_id`` with the same content (submitting again is safe)."""
        submission = job if isinstance(job, JobSubmission) else JobSubmission.model_validate(job)
        reply = await self._request(
            {"type": "submit_job", **submission.model_dump(mode="json", exclude_none=True)}
        )
        assert isinstance(reply, JobAccepted)
        return reply

    async def jobs(
        self,
        workstation_id: str | None = None,
        state: JobState | str | None = None,
        *,
        limit: int = 100,
    ) -> list[JobView]:
        """Pick jobs, newest first (at most ``limit``, up to 1000), optionally of one
        workstation and in one state."""
        message: dict[str, Any] = {"type": "get_jobs", "limit": limit}
        if workstation_id is not None:
            message["workstation_id"] = workstation_id
        if state is not None:
            message["state"] = JobState(state).value
        reply = await self._request(message)
        assert isinstance(reply, Jobs)
        return reply.jobs

    async def job(self, job_id: str) -> JobView:
        """One pick job (:class:`ServerError` ``JOB_NOT_FOUND`` when the gateway has none)."""
        reply = await self._request({"type": "get_jobs", "job_id": job_id})
        assert isinstance(reply, Jobs)
        return reply.jobs[0]

    async def confirm_pick(
        self,
        job_id: str,
        line_id: str,
        quantity_picked: int,
        reason: str | None = None,
        *,
        confirmation_id: str | None = None,
        deadline_s: float | None = None,
    ) -> PickConfirmed:
        """Confirm a presented line (operator role); less than asked needs a ``reason``.

        The confirmation carries ``confirmation_id`` (a new UUID when not given) and is sent
        again with that same id, across the client's URLs, while the link drops, no reply
        comes within ``request_timeout``, a standby answers ``NOT_ACTIVE`` or the gateway
        could not commit it (``INTERNAL_ERROR``), until another answer comes or
        ``deadline_s`` (default ``confirm_deadline_s``) has passed; then the last failure
        is raised. The gateway answers only once the confirmation is committed, and
        answers a retry of a stored one (also the other gateway of the cell, after a
        takeover) with the stored result: the line is confirmed once.
        """
        message: dict[str, Any] = {
            "type": "confirm_pick",
            "job_id": job_id,
            "line_id": line_id,
            "quantity_picked": quantity_picked,
            "confirmation_id": confirmation_id or str(uuid.uuid4()),
        }
        if reason is not None:
            message["reason"] = reason
        reply = await self._retried(
            message, self.confirm_deadline_s if deadline_s is None else deadline_s
        )
        assert isinstance(reply, PickConfirmed)
        return reply

    async def _retried(self, message: dict[str, Any], deadline_s: float) -> BaseModel:
        """``_request`` again and again (the same message: an idempotent one) until a reply
        that is not ``NOT_ACTIVE`` or ``INTERNAL_ERROR``, or ``deadline_s``. No reply in
        time moves the client to the next URL (a frozen gateway keeps its connections
        open)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        for attempt in itertools.count(1):
            try:
                return await self._request(message)
            except AuthenticationFailed:
                raise
            except ServerError as error:
                if error.code not in _RETRIED_CODES:
                    raise
                failure: Exception = error
            except RequestTimeout as error:
                failure = error
                if len(self.urls) > 1:
                    await self._try_switch(self._next_url())
            except _LINK_ERRORS as error:
                failure = error
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise failure
            log.info("confirmation not answered (%s): sending it again", failure)
            pause = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt - 1, 16))
            await asyncio.sleep(min(remaining, pause * (0.5 + random.random() / 2)))
            if self._reader is None or self._reader.done():
                # A switch that found no gateway left no reader to reconnect: connect here.
                await self._try_switch(self.url)
        raise AssertionError("unreachable")

    async def _try_switch(self, target: str) -> None:
        """:meth:`_switch`, a gateway that does not answer ignored (tried again later)."""
        try:
            await self._switch(target)
        except AuthenticationFailed:
            raise
        except _LINK_ERRORS as exc:
            log.info("no gateway answered: %s", exc)

    async def pause_job(self, job_id: str, reason: str | None = None) -> JobUpdate:
        return await self._job_control("pause_job", job_id, reason)

    async def resume_job(self, job_id: str) -> JobUpdate:
        return await self._job_control("resume_job", job_id, None)

    async def cancel_job(self, job_id: str, reason: str | None = None) -> JobUpdate:
        return await self._job_control("cancel_job", job_id, reason)

    async def _job_control(self, kind: str, job_id: str, reason: str | None) -> JobUpdate:
        message: dict[str, Any] = {"type": kind, "job_id": job_id}
        if reason is not None:
            message["reason"] = reason
        reply = await self._request(message)
        assert isinstance(reply, JobUpdate)
        return reply

    async def job_events(
        self, workstation_ids: list[str] | None = None
    ) -> AsyncIterator[JobEventMessage]:
        """Subscribe to ``job_events`` (of these workstations; default all) and yield them.
        Kept and replayed after a reconnect."""
        queue: asyncio.Queue[Notification | CarouselError] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            await self._subscribe(SubscriptionType.JOB_EVENTS, None, workstation_ids)
            self._subscriptions.append((SubscriptionType.JOB_EVENTS, None, workstation_ids))
            while True:
                item = await queue.get()
                if isinstance(item, CarouselError):
                    raise item
                if isinstance(item, JobEventMessage):
                    yield item
        finally:
            self._listeners.discard(queue)

    async def events(
        self, subscription: str = "all_events", machine_ids: list[str] | None = None
    ) -> AsyncIterator[Notification]:
        """Subscribe and yield events (status broadcasts, results, moves, machine events).

        Subscribes first, so the current state arrives as the first ``status_broadcast``.
        """
        queue: asyncio.Queue[Notification | CarouselError] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            await self.subscribe(subscription, machine_ids)
            while True:
                item = await queue.get()
                if isinstance(item, CarouselError):
                    raise item
                yield item
        finally:
            self._listeners.discard(queue)

    async def _subscribe(
        self,
        kind: SubscriptionType,
        machine_ids: list[str] | None,
        workstation_ids: list[str] | None = None,
    ) -> SubscriptionConfirmed:
        message: dict[str, Any] = {"type": "subscribe", "subscription_type": kind.value}
        if machine_ids is not None:
            message["machine_ids"] = machine_ids
        if workstation_ids is not None:
            message["workstation_ids"] = workstation_ids
        reply = await self._request(message)
        assert isinstance(reply, SubscriptionConfirmed)
        return reply

    def _register(self, *, outcome: bool = False) -> tuple[str, _Pending]:
        request_id = f"c{next(self._ids)}"
        pending = _Pending(asyncio.get_running_loop(), outcome=outcome)
        self._pending[request_id] = pending
        return request_id, pending

    async def _request(self, message: dict[str, Any]) -> BaseModel:
        """One request; a ``NOT_ACTIVE`` refusal is followed to the active gateway (at most
        once per known URL) and the request sent again there."""
        for hop in range(len(self.urls) + 1):
            try:
                return await self._request_once(message)
            except ServerError as error:
                if error.code != "NOT_ACTIVE" or hop == len(self.urls):
                    raise
                await self._follow(error)
        raise AssertionError("unreachable")

    async def _follow(self, refusal: ServerError) -> None:
        """Leave a standby for the active instance its refusal names (or, when it names
        none, the next URL); subscriptions are replayed there."""
        target = refusal.active_url
        if target is None:
            target = self._next_url()
        elif target not in self.urls:
            self.urls.append(target)
        await self._switch(target)

    def _next_url(self) -> str:
        return self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]

    async def _switch(self, target: str) -> None:
        """Connect to ``target`` (else, in turn, to the other URLs) instead of the current
        gateway; requests in flight there fail with :class:`ConnectionLost`."""
        async with self._switching:
            if target == self.url and self._connected.is_set():
                return  # another request has already moved this client there
            log.info("leaving gateway %s for %s", self.url, target)
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            self._connected.clear()
            if self._connection is not None:
                await self._connection.close()
            self._fail_pending(ConnectionLost(f"left gateway {self.url} for {target}"))
            self.url = target
            await self._open()
            self.reconnects += 1
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        await self._resubscribe()

    async def _request_once(self, message: dict[str, Any]) -> BaseModel:
        request_id, pending = self._register()
        try:
            await self._send({**message, "request_id": request_id})
            return await self._await(pending.reply, self.request_timeout)
        finally:
            self._pending.pop(request_id, None)

    async def _send(self, message: dict[str, Any]) -> None:
        if not self._connected.is_set():
            async with asyncio.timeout(self.request_timeout):
                await self._connected.wait()
        assert self._connection is not None
        try:
            await self._connection.send(json.dumps(message))
        except ConnectionClosed:
            raise ConnectionLost("the link to the gateway dropped") from None

    @staticmethod
    async def _await(future: asyncio.Future[_T], limit: float | None) -> _T:
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(future)
        except TimeoutError:
            raise RequestTimeout(f"no reply within {limit} s") from None

    # -- reading --------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            assert self._connection is not None
            try:
                async for frame in self._connection:
                    self._route(frame)
            except ConnectionClosed:
                pass
            self._connected.clear()
            self._fail_pending(ConnectionLost("the link to the gateway dropped"))
            if self._closing or not self.reconnect:
                self._notify(ConnectionLost("the link to the gateway closed"))
                return
            while True:  # reconnect with backoff and jitter
                attempt += 1
                delay = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt - 1, 16))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                try:
                    await self._open()
                except (OSError, InvalidStatus, ConnectionClosed, CarouselError) as exc:
                    log.info("reconnect to %s failed: %s", self.url, exc)
                    continue
                break
            attempt = 0
            self.reconnects += 1
            self._resubscriber = asyncio.get_running_loop().create_task(self._resubscribe())

    async def _resubscribe(self) -> None:
        for kind, machine_ids, workstation_ids in list(self._subscriptions):
            try:
                await self._subscribe(kind, machine_ids, workstation_ids)
            except CarouselError as exc:
                log.warning("re-subscribing %s failed: %s", kind.value, exc)
                return

    def _route(self, frame: str | bytes) -> None:
        try:
            message = parse_server_message(frame)
        except (CarouselError, ValidationError, ValueError) as exc:
            log.warning("ignored a frame from the gateway: %s", exc)
            return
        request_id = getattr(message, "request_id", None)
        pending = self._pending.get(request_id) if request_id else None
        if pending is not None:
            if isinstance(message, MoveCompletedMessage | MoveFailedMessage):
                if pending.outcome is not None and not pending.outcome.done():
                    pending.outcome.set_result(message)
            elif isinstance(message, ErrorMessage):
                pending.fail(ServerError(message))
            elif not pending.reply.done():
                pending.reply.set_result(message)
        if isinstance(
            message,
            StatusBroadcast
            | CommandResult
            | MoveCompletedMessage
            | MoveFailedMessage
            | MachineEvent
            | JobEventMessage,
        ):
            self._notify(message)

    def _notify(self, item: Notification | CarouselError) -> None:
        for queue in self._listeners:
            queue.put_nowait(item)

    def _fail_pending(self, error: Exception) -> None:
        for pending in list(self._pending.values()):
            pending.fail(error)
