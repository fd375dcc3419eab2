"""The errors a PLC link raises, shared by both links and their supervisor.

They live apart from the links so that the supervisor (which both links import) can raise
:class:`PlcNotConnected` without importing either link.
"""

from __future__ import annotations

__all__ = [
    "ConnectFailed",
    "PlcBadReply",
    "PlcConnectionLost",
    "PlcError",
    "PlcNotConnected",
    "PlcOutOfStep",
    "PlcTimeout",
]


class PlcError(Exception):
    """Base of every error talking to a PLC."""


class PlcNotConnected(PlcError):
    """The link is down (or the breaker is open); nothing was sent."""


class PlcTimeout(PlcError):
    """No complete reply in time; the request may or may not have been acted on."""


class PlcConnectionLost(PlcError):
    """The link closed while waiting for a reply (the request may have been acted on)."""


class PlcBadReply(PlcError):
    """A reply that cannot be right; the link is re-established."""


class PlcOutOfStep(PlcError):
    """The PLC sent bytes no request explains; the link is re-established."""


class ConnectFailed(PlcError):
    """Opening a link failed; the message is the reason the link reports (``last_error``)."""
