"""The PLC status byte: eight flags, their Spanish wire labels, and the interlocks.

Pure logic: no I/O. The bit table is the one in ``docs/plc-protocol.md``; the spec's example
values (raw 218 with READY "OK") are illustrative only and do not match the bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "FLAGS",
    "FLAG_BY_KEY",
    "IDLE_READY_REMOTE",
    "Blocker",
    "FlagSpec",
    "StatusError",
    "StatusKey",
    "StatusWord",
]


class StatusKey(StrEnum):
    """The eight status keys, in bit order (bit 0 first)."""

    READY = "READY"
    RUN = "RUN"
    MODO_OPERACION = "MODO_OPERACION"
    ALARMA = "ALARMA"
    PARADA_EMERGENCIA = "PARADA_EMERGENCIA"
    VFD = "VFD"
    ERROR_POSICIONAMIENTO = "ERROR_POSICIONAMIENTO"
    SENTIDO_GIRO = "SENTIDO_GIRO"


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """How one bit is read: its labels and when it forbids a move."""

    bit: int
    key: StatusKey
    label_set: str
    label_clear: str
    #: The bit value that blocks a move, or None if the bit never blocks.
    blocks_when: int | None
    #: Human text of the interlock reason when the bit blocks a move.
    reason: str = ""
    #: True for bits whose blocking value is a fault (not a mode or motion).
    is_fault: bool = False


FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec(0, StatusKey.READY, "OK", "Fallo", 0, "machine is not ready (READY=0)"),
    FlagSpec(1, StatusKey.RUN, "En movimiento", "Detenido", 1, "carousel is moving (RUN=1)"),
    FlagSpec(
        2,
        StatusKey.MODO_OPERACION,
        "Remoto",
        "Manual",
        0,
        "machine is in manual mode; remote moves are disabled",
    ),
    FlagSpec(3, StatusKey.ALARMA, "Activa", "Desactivada", 1, "alarm active", is_fault=True),
    # Active-low: bit set means the e-stop is NOT pressed.
    FlagSpec(
        4,
        StatusKey.PARADA_EMERGENCIA,
        "Desactivada",
        "Activa",
        0,
        "emergency stop pressed",
        is_fault=True,
    ),
    FlagSpec(5, StatusKey.VFD, "Fallo", "OK", 1, "drive (VFD) fault", is_fault=True),
    FlagSpec(
        6,
        StatusKey.ERROR_POSICIONAMIENTO,
        "Fallo",
        "OK",
        1,
        "positioning error",
        is_fault=True,
    ),
    FlagSpec(7, StatusKey.SENTIDO_GIRO, "Descendente", "Ascendente", None),
)

FLAG_BY_KEY: dict[StatusKey, FlagSpec] = {spec.key: spec for spec in FLAGS}

#: The status byte of an idle machine, ready for remote moves.
IDLE_READY_REMOTE = 21


@dataclass(frozen=True, slots=True)
class Blocker:
    """One interlock reason that forbids a move."""

    key: StatusKey
    text: str


class StatusError(ValueError):
    """A status value outside one byte."""


@dataclass(frozen=True, slots=True)
class StatusWord:
    """A decoded status byte. Immutable and hashable; ``raw`` is the only state."""

    raw: int

    def __post_init__(self) -> None:
        if isinstance(self.raw, bool) or not isinstance(self.raw, int) or not 0 <= self.raw <= 255:
            raise StatusError(f"status byte must be an int in 0..255, got {self.raw!r}")

    @staticmethod
    def of(raw: int) -> StatusWord:
        """The word for a status byte, shared: one instance per value, built at import,
        so that decoding a reply (hundreds a second) creates none. Raises
        :class:`StatusError` like the constructor for a value outside one byte."""
        if type(raw) is int and 0 <= raw <= 255:
            return _WORDS[raw]
        return StatusWord(raw)

    @classmethod
    def from_flags(cls, flags: dict[StatusKey | str, bool]) -> StatusWord:
        """Encode flags (bit value True = 1) into a status byte; missing keys are 0."""
        raw = 0
        for key, value in flags.items():
            spec = FLAG_BY_KEY[StatusKey(key)]
            if value:
                raw |= 1 << spec.bit
        return cls(raw)

    def bit(self, key: StatusKey) -> int:
        return (self.raw >> FLAG_BY_KEY[key].bit) & 1

    def flags(self) -> dict[StatusKey, bool]:
        """Every key with its raw bit value (True = 1)."""
        return {spec.key: bool((self.raw >> spec.bit) & 1) for spec in FLAGS}

    def labels(self) -> dict[str, str]:
        """Every key with its Spanish wire label, in bit order."""
        return {
            spec.key.value: spec.label_set if (self.raw >> spec.bit) & 1 else spec.label_clear
            for spec in FLAGS
        }

    def blockers(self) -> tuple[Blocker, ...]:
        """The interlock reasons that forbid a move now, in bit order."""
        return tuple(
            Blocker(spec.key, spec.reason)
            for spec in FLAGS
            if spec.blocks_when is not None and ((self.raw >> spec.bit) & 1) == spec.blocks_when
        )

    def faults(self) -> tuple[StatusKey, ...]:
        """Active fault keys (alarm, e-stop, drive, positioning), in bit order."""
        return tuple(
            spec.key
            for spec in FLAGS
            if spec.is_fault and ((self.raw >> spec.bit) & 1) == spec.blocks_when
        )

    @property
    def ready(self) -> bool:
        return bool(self.raw & 0b1)

    @property
    def running(self) -> bool:
        return bool(self.raw & 0b10)

    @property
    def remote(self) -> bool:
        return bool(self.raw & 0b100)

    @property
    def alarm(self) -> bool:
        return bool(self.raw & 0b1000)

    @property
    def emergency_stop(self) -> bool:
        """True when the e-stop is pressed (the bit is active-low)."""
        return not self.raw & 0b1_0000

    @property
    def vfd_fault(self) -> bool:
        return bool(self.raw & 0b10_0000)

    @property
    def positioning_error(self) -> bool:
        return bool(self.raw & 0b100_0000)

    @property
    def descending(self) -> bool:
        return bool(self.raw & 0b1000_0000)


_WORDS: tuple[StatusWord, ...] = tuple(StatusWord(raw) for raw in range(256))
