"""A JSON-lines log of what simulated PLCs saw, readable by another process while it grows.

Failover tests run the gateways and the simulators as separate processes; this log is how
a test proves, from outside, that no PLC ever had two sessions at once and which peer sent
each MOVE. One line per event, flushed as soon as it is written, so a reader never waits
for a buffer and a killed writer loses at most the line it was writing. The writes happen
on a thread of their own so the simulators' event loop never waits for the disk.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO

__all__ = ["EventLogWriter", "read_events"]

_STOP = object()


class EventLogWriter:
    """Appends events (one JSON object per line) to a file, each line flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Opened here so a bad path fails at start, not on the writer thread.
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_all, name="sim-event-log", daemon=True)
        self._thread.start()

    def write(self, event: Mapping[str, object]) -> None:
        """Queue one event; never blocks the caller (the thread writes it)."""
        self._queue.put(json.dumps(dict(event), separators=(",", ":"), sort_keys=True))

    def close(self) -> None:
        """Write what is queued, then close the file (blocks: call it off the loop)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _write_all(self) -> None:
        try:
            while True:
                line = self._queue.get()
                if line is _STOP:
                    return
                self._file.write(f"{line}\n")
                self._file.flush()
        finally:
            self._file.close()


def read_events(path: Path) -> list[dict[str, object]]:
    """Every complete line of a log (a line still being written is left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events: list[dict[str, object]] = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            events.append(json.loads(line))
    return events
