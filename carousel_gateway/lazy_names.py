"""A package's curated names, each loaded from its module on first use.

A sub-package lists its public names in ``__all__`` and says where each lives; importing
one of its modules (``carousel_gateway.plc.status``, say) then does not load the others
(the Modbus link, pymodbus), as websockets' package does for its own names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps a name to its module."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home}"), name)

    return __getattr__
