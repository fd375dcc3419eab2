"""The lease on the network: take it as standby, renew it as active, fence at the deadline.

:class:`~carousel_gateway.ha.lease.LeaseKeeper` decides (pure); this module sends its SQL
and keeps its clock. The lease has a PostgreSQL connection of its own on a thread of its
own (psycopg sync through the same :class:`~carousel_gateway.database.Database` seam the
lease SQL is tested on): a renewal must never queue behind the journal's writes, and a
stuck lease statement blocks neither the loop nor the journal. The deadline is a loop
timer (``call_at``) that runs the fence synchronously: the PLC sockets are aborted in that
very callback, so no MOVE byte can follow it, whatever the renewal is waiting for.

The gateway reacts through :class:`Transitions`: ``activate`` after a take (the journal
carries the new epoch, orphaned intents are marked ``lost``, then the links open),
``fence_now`` (synchronous: abort the links) and ``stand_down`` (the rest, awaited).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from carousel_gateway.config import HaConfig
from carousel_gateway.database import Database, open_database, redact_url
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import MoveIntent
from carousel_gateway.ha import lease_store
from carousel_gateway.ha.lease import LeaseKeeper, LeaseSettings, Role
from carousel_gateway.store import FencedWrite, Journal

__all__ = [
    "READY_LIMIT_S",
    "ActiveHolder",
    "CellInstance",
    "HaCoordinator",
    "Takeover",
    "Transitions",
    "advertised",
    "parse_advertised",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How often an instance refreshes its own row in ``ha_instances`` and reads the others'
#: (an instance started later is known to the pages of the others this long after).
INSTANCES_REFRESH_S = 5.0
#: After a takeover, the longest wait for every machine's first reading before the new
#: active notes itself ready anyway (a PLC that never answers does not hold it up).
READY_LIMIT_S = 15.0


def advertised(http_url: str, ws_url: str) -> str:
    """Both URLs of an instance as the lease row keeps them (``advertise_url``: JSON)."""
    return json.dumps({"http": http_url, "ws": ws_url}, separators=(",", ":"))


def parse_advertised(text: str) -> tuple[str | None, str | None]:
    """The (REST, WebSocket) URLs of a lease row; a plain URL is the REST one."""
    try:
        data = json.loads(text)
    except ValueError:
        return (text or None), None
    if not isinstance(data, dict):
        return None, None
    http, ws = data.get("http"), data.get("ws")
    return (http if isinstance(http, str) and http else None), (
        ws if isinstance(ws, str) and ws else None
    )


@dataclass(frozen=True, slots=True)
class ActiveHolder:
    """Who holds the lease, as this instance last read it."""

    instance: str
    epoch: int
    http_url: str | None
    ws_url: str | None
    valid: bool


@dataclass(frozen=True, slots=True)
class CellInstance:
    """An instance of the cell as it registered itself (its REST and WebSocket URLs)."""

    instance: str
    http_url: str | None
    ws_url: str | None


@dataclass(frozen=True, slots=True)
class Takeover:
    """The latest take of the cell's lease, by the database's clock (wall-clock seconds)."""

    instance: str
    epoch: int
    at: float
    previous_instance: str | None
    #: When the new holder had read every machine (None while it has not).
    ready_at: float | None
    #: From the previous holder's last renewal to ``ready_at`` (None while not ready, or
    #: when the previous holder's last renewal is unknown).
    seconds: float | None

    @classmethod
    def of(cls, row: lease_store.Holder) -> Takeover | None:
        if row.taken_at is None:
            return None
        return cls(
            row.owner,
            row.epoch,
            row.taken_at.timestamp(),
            row.previous_owner,
            None if row.ready_at is None else row.ready_at.timestamp(),
            row.takeover_s,
        )


@dataclass(slots=True)
class Transitions:
    """What the gateway does when the role changes (wired by ``app.py``)."""

    activate: Callable[[int], Awaitable[None]]  # the lease was taken with this epoch
    fence_now: Callable[[str], None]  # synchronous: abort the PLC links at once
    stand_down: Callable[[], Awaitable[None]]  # then stop the rest (fleet tasks, MQTT)
    #: A standby shows the active's latest readings (rows of ``Journal.snapshots``).
    mirror: Callable[[list[dict[str, Any]]], None] | None = None
    #: After ``activate``: returns once every machine has been read (bounded by the
    #: caller); the takeover is then noted ready in the lease row.
    ready: Callable[[], Awaitable[None]] | None = None


class HaCoordinator:
    """One instance's part in its cell: the lease task, the move gate, the refusal."""

    def __init__(self, config: HaConfig, url: str, journal: Journal) -> None:
        self.config = config
        self.url = url
        self.journal = journal
        self.keeper = LeaseKeeper(LeaseSettings(config.ttl_s, config.renew_s, config.margin_s))
        #: The longest a lease statement may take: past it, its answer comes too late to use.
        self._io_timeout_s = config.ttl_s - config.margin_s
        self.transitions: Transitions | None = None
        self.holder: ActiveHolder | None = None
        self.takeovers = 0
        #: Wall-clock time of the last takeover (health).
        self.active_since: float | None = None
        #: The latest take of the lease as last read (this instance's own, when active).
        self.takeover: Takeover | None = None
        #: Every instance of the cell (``ha_instances``), as last read.
        self.instances: tuple[CellInstance, ...] = ()
        self._instances_read_at: float | None = None
        self._readiness: asyncio.Task[None] | None = None
        self._advertise = advertised(config.advertise_url, config.advertise_ws_url)
        self._own_urls = (config.advertise_url or None, config.advertise_ws_url or None)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ha-lease")
        self._db: Database | None = None
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._standing_down: asyncio.Task[None] | None = None
        self._activation: asyncio.Task[None] | None = None
        self._became_active = asyncio.Event()
        self._became_standby = asyncio.Event()
        self._became_standby.set()
        self._holder_read = asyncio.Event()
        #: MOVEs admitted and not yet written: the epoch each intent was committed under.
        self._admitted: dict[tuple[str, int], int] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, transitions: Transitions) -> None:
        """Open the lease connection and start as standby (the first take comes at once)."""
        self.transitions = transitions
        await self._run(self._open)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ha-lease")

    def advertise(self, http_url: str, ws_url: str) -> None:
        """The URLs this instance names in the lease row (before :meth:`start`)."""
        self._advertise = advertised(http_url, ws_url)
        self._own_urls = (http_url or None, ws_url or None)

    async def halt(self) -> None:
        """Take and renew no more (a graceful stop begins). The deadline stays armed: an
        active instance still fences itself if stopping outlasts its grant."""
        for task in (self._task, self._activation, self._readiness):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._activation = self._readiness = None

    async def stop(self) -> None:
        """Stop renewing; an active instance releases the lease (the standby need not wait
        out the TTL). Call after the fleet's links are closed."""
        await self.halt()
        self._cancel_deadline()
        epoch = self.keeper.epoch
        if self.keeper.role is Role.ACTIVE and epoch is not None:
            try:
                released = await self._run(
                    self._on_db,
                    lease_store.release,
                    self.config.cell,
                    self.config.instance,
                    epoch,
                )
                log.info("ha: lease of %s epoch %d released: %s", self.config.cell, epoch, released)
            except Exception as exc:  # the TTL ends it anyway
                log.warning("ha: could not release the lease (%s); it expires by itself", exc)
            self.keeper.refused()
            self.keeper.stood_down()
        with contextlib.suppress(Exception):
            await self._run(self._close)
        self._executor.shutdown(wait=False)

    # -- what the rest of the gateway asks ------------------------------------------------

    @property
    def cell(self) -> str:
        return self.config.cell

    @property
    def instance(self) -> str:
        return self.config.instance

    @property
    def epoch(self) -> int | None:
        return self.keeper.epoch if self.role is Role.ACTIVE else None

    @property
    def active_instance(self) -> str | None:
        holder = self.holder
        return holder.instance if holder is not None and holder.valid else None

    @property
    def active_url(self) -> str | None:
        holder = self.holder
        return holder.http_url if holder is not None and holder.valid else None

    #: Other writers of this instance's fenced tables (the job store): their writes the
    #: database refused count too.
    fenced_sources: tuple[Callable[[], int], ...] = ()

    @property
    def fenced_writes(self) -> int:
        """Writes the database's fence refused: the journal's and the job store's."""
        return self.journal.fenced_writes + sum(count() for count in self.fenced_sources)

    @property
    def role(self) -> Role:
        return self.keeper.tick(asyncio.get_running_loop().time())

    def deadline_in(self) -> float | None:
        """Seconds until this active instance fences itself (None unless active)."""
        deadline = self.keeper.deadline
        if self.role is not Role.ACTIVE or deadline is None:
            return None
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def refusal(self) -> GatewayError | None:
        """``NOT_ACTIVE`` naming the holder while this instance may not command; else None."""
        if self.role is Role.ACTIVE:
            return None
        holder = self.holder
        if holder is None or holder.instance == self.config.instance or not holder.valid:
            text = f"gateway {self.config.instance} is not the active one of {self.config.cell}"
            text += "; no active gateway is known right now"
            return GatewayError(ErrorCode.NOT_ACTIVE, text)
        return GatewayError(
            ErrorCode.NOT_ACTIVE,
            f"gateway {self.config.instance} is the standby of {self.config.cell}: "
            f"{holder.instance} is active (epoch {holder.epoch})"
            + (f" at {holder.http_url}" if holder.http_url else ""),
            active_instance=holder.instance,
            active_url=holder.http_url,
            active_ws_url=holder.ws_url,
        )

    async def admit(self, intent: MoveIntent) -> None:
        """The move gate: commit the MOVE's intent under the current epoch, or refuse."""
        epoch = self.keeper.epoch
        if self.role is not Role.ACTIVE or epoch is None or self.journal.epoch != epoch:
            raise self._not_active(intent)
        try:
            await self.journal.commit_intent(intent)
        except FencedWrite as exc:
            log.error("ha: intent of %s refused by the database fence: %s", intent.machine_id, exc)
            raise self._not_active(intent) from None
        except Exception as exc:
            raise GatewayError(
                ErrorCode.JOURNAL_UNAVAILABLE,
                f"the MOVE's intent could not be committed ({exc}); the MOVE was not sent",
                machine_id=intent.machine_id,
            ) from None
        # Committed; still ours now? (The deadline may have passed while it committed.)
        if self.role is not Role.ACTIVE or self.keeper.epoch != epoch:
            await self.journal.settle_intent(intent, "refused")
            raise self._not_active(intent)
        self._admitted[intent.machine_id, intent.command_id] = epoch

    def check(self, intent: MoveIntent) -> None:
        """Right before the MOVE's bytes: the epoch that admitted it still holds the lease
        here (no await between this and the write, so no fence can come in between)."""
        epoch = self._admitted.pop((intent.machine_id, intent.command_id), None)
        if self.role is not Role.ACTIVE or epoch is None or self.keeper.epoch != epoch:
            raise self._not_active(intent)

    async def not_sent(self, intent: MoveIntent) -> None:
        self._admitted.pop((intent.machine_id, intent.command_id), None)
        await self.journal.settle_intent(intent, "refused")

    async def wait_holder(self, instance: str) -> None:
        """Until this standby has read that ``instance`` holds the lease (tests)."""
        while self.active_instance != instance:
            self._holder_read.clear()
            await self._holder_read.wait()

    async def wait_role(self, role: Role) -> None:
        """Until this instance is ``role`` (tests, the CLI)."""
        event = self._became_active if role is Role.ACTIVE else self._became_standby
        await event.wait()

    # -- the lease task -------------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._standing_down is not None:
                await asyncio.shield(self._standing_down)
            if self.role is Role.ACTIVE:
                await self._renew(loop)
            elif self.keeper.epoch is not None:
                # Past the deadline before its timer ran: fence first, never take as-is.
                self._fence("the lease deadline passed")
                continue
            else:
                await self._try_take(loop)
            await self._refresh_instances(loop)
            await asyncio.sleep(self.config.renew_s)  # the renewal period itself

    async def _renew(self, loop: asyncio.AbstractEventLoop) -> None:
        epoch = self.keeper.epoch
        assert epoch is not None
        sent = loop.time()
        try:
            ok = await self._run(
                self._on_db,
                lease_store.renew,
                self.config.cell,
                self.config.instance,
                epoch,
                self.config.ttl_s,
            )
        except Exception as exc:  # no answer: the deadline timer fences if it comes to that
            log.warning("ha: lease renewal failed (%s)", exc)
            return
        if self.keeper.role is not Role.ACTIVE or self.keeper.epoch != epoch:
            return  # fenced meanwhile: a late answer changes nothing
        if ok:
            self.keeper.granted(epoch, sent)
            self._arm_deadline(loop)
        else:
            self._fence("the database says the lease is no longer ours")

    async def _try_take(self, loop: asyncio.AbstractEventLoop) -> None:
        sent = loop.time()
        try:
            epoch = await self._run(
                self._on_db,
                lease_store.take,
                self.config.cell,
                self.config.instance,
                self._advertise,
                self.config.ttl_s,
            )
            if epoch is None:
                await self._read_holder()
                await self._mirror()
                return
        except Exception as exc:
            log.warning("ha: lease take failed (%s)", exc)
            return
        self.keeper.granted(epoch, sent)
        if self.keeper.tick(loop.time()) is not Role.ACTIVE:
            return  # the grant came back too late to use: its deadline has passed
        self._arm_deadline(loop)
        self.holder = ActiveHolder(self.config.instance, epoch, *self._own_urls, True)
        log.warning(
            "ha: %s took the lease of %s, epoch %d", self.config.instance, self.config.cell, epoch
        )
        # In a task of its own: renewals go on meanwhile (settling the orphans may queue
        # behind journal writes), and a fence cancels it, so the fleet can never be started
        # after the fence has stopped it.
        self._activation = loop.create_task(self._activate(epoch), name="ha-activate")

    async def _activate(self, epoch: int) -> None:
        try:
            await self.journal.use_epoch(epoch)
            assert self.transitions is not None
            await self.transitions.activate(epoch)
        except Exception as exc:
            log.exception("ha: takeover failed")
            self._activation = None
            self._fence(f"takeover failed: {exc}")
            return
        self._activation = None
        self.takeovers += 1
        self.active_since = time.time()
        self._became_standby.clear()
        self._became_active.set()
        self._readiness = asyncio.get_running_loop().create_task(
            self._note_ready(epoch), name="ha-ready"
        )

    async def _mirror(self) -> None:
        """Show the active's latest readings (a standby's reads come from the database)."""
        assert self.transitions is not None
        if self.transitions.mirror is not None:
            self.transitions.mirror(await self.journal.snapshots())

    async def _read_holder(self) -> None:
        current = await self._run(self._on_db, lease_store.holder, self.config.cell)
        if current is None:
            self.holder = None
            return
        http, ws = parse_advertised(current.advertise_url)
        self.holder = ActiveHolder(current.owner, current.epoch, http, ws, current.valid)
        self.takeover = Takeover.of(current)
        self._holder_read.set()

    async def _refresh_instances(self, loop: asyncio.AbstractEventLoop) -> None:
        """Now and then: this instance's row in ``ha_instances`` again, and the others'."""
        now = loop.time()
        read_at = self._instances_read_at
        if read_at is not None and now - read_at < INSTANCES_REFRESH_S:
            return
        self._instances_read_at = now
        try:
            await self._run(self._on_db, self._register)
        except Exception as exc:  # the next refresh tries again
            log.warning("ha: could not refresh the cell's instances (%s)", exc)

    def _register(self, db: Database) -> None:
        """On the lease thread: register this instance, read every instance of the cell."""
        cell = self.config.cell
        lease_store.register_instance(db, cell, self.config.instance, self._advertise)
        self.instances = tuple(
            CellInstance(row.instance, *parse_advertised(row.advertise_url))
            for row in lease_store.instances(db, cell)
        )

    async def _note_ready(self, epoch: int) -> None:
        """After a takeover: the take's record, then (every machine read) ``ready_at``."""
        with contextlib.suppress(Exception):
            await self._read_own_row(epoch)
        assert self.transitions is not None
        if self.transitions.ready is not None:
            await self.transitions.ready()
        for _ in range(5):
            try:
                await self._run(
                    self._on_db,
                    lease_store.mark_ready,
                    self.config.cell,
                    self.config.instance,
                    epoch,
                )
                await self._read_own_row(epoch)
            except Exception as exc:
                log.warning("ha: could not note the takeover ready (%s)", exc)
                await asyncio.sleep(self.config.renew_s)
                continue
            takeover = self.takeover
            if takeover is not None and takeover.seconds is not None:
                log.warning(
                    "ha: %s ready (epoch %d), %.1f s after %s's last renewal",
                    self.config.instance,
                    epoch,
                    takeover.seconds,
                    takeover.previous_instance,
                )
            return

    async def _read_own_row(self, epoch: int) -> None:
        row = await self._run(self._on_db, lease_store.holder, self.config.cell)
        if row is not None and row.owner == self.config.instance and row.epoch == epoch:
            self.takeover = Takeover.of(row)

    # -- fencing --------------------------------------------------------------------------

    def _arm_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        self._cancel_deadline()
        deadline = self.keeper.deadline
        assert deadline is not None
        self._deadline = loop.call_at(deadline, self._fence, "the lease deadline passed")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _fence(self, why: str) -> None:
        """Stop driving the carousels now (synchronously), then stand down."""
        if self.keeper.epoch is None or self._standing_down is not None:
            return  # a standby, or already fenced and standing down
        self._cancel_deadline()
        if self._activation is not None:
            self._activation.cancel()  # it never starts the fleet after this
            self._activation = None
        if self._readiness is not None:
            self._readiness.cancel()
            self._readiness = None
        epoch = self.keeper.epoch
        self.keeper.refused()
        self.keeper.tick(asyncio.get_running_loop().time())
        log.critical(
            "ha: %s FENCED (cell %s, epoch %s): %s; PLC links aborted, commands refused",
            self.config.instance,
            self.config.cell,
            epoch,
            why,
        )
        assert self.transitions is not None
        self.transitions.fence_now(why)
        self._became_active.clear()
        self._standing_down = asyncio.get_running_loop().create_task(
            self._stand_down(), name="ha-stand-down"
        )

    async def _stand_down(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await self.journal.use_epoch(None)
            assert self.transitions is not None
            await self.transitions.stand_down()
        finally:
            self.keeper.stood_down()
            self._standing_down = None
            self._became_standby.set()
            log.warning("ha: %s is a standby again", self.config.instance)

    def _not_active(self, intent: MoveIntent) -> GatewayError:
        refused = self.refusal() or GatewayError(
            ErrorCode.NOT_ACTIVE, f"gateway {self.config.instance} lost the lease"
        )
        refused.machine_id = intent.machine_id
        return refused

    # -- the lease connection's thread ----------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        # A renewal that cannot finish within the lease's margin is worthless: bounded so
        # a silent network fails it (and the next one reconnects) instead of hanging here.
        self._db = open_database(
            self.url, sqlite_schema="", postgres_schema="SELECT 1", timeout_s=self._io_timeout_s
        )
        lease_store.ensure_schema(self._db)
        # Each time the lease connection opens: the other instances find this one.
        with contextlib.suppress(Exception):
            self._register(self._db)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _on_db(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(db, *args)`` on the lease thread; a lost connection is opened again first."""
        if self._db is not None and not self._db.usable:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None
        if self._db is None:
            try:
                self._open()
            except Exception as exc:
                raise ConnectionError(
                    f"lease connection to {redact_url(self.url)}: {exc}"
                ) from None
        assert self._db is not None
        return fn(self._db, *args)
