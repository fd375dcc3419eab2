"""Runs the spec's Python examples, unmodified, for tests/integration/test_spec_examples.py.

Needs the legacy ``websockets`` client (< 14: the class calls ``websocket.closed``), so it
runs under ``.venv-spec/bin/python``, not the project's venv.

    run_python_example.py client URL    the "Cliente Python Asíncrono" class
                                        (client_example.py), as ``CarouselWebSocketClient(URL)``;
                                        ``connect()`` runs in a task and the test sends
                                        commands on stdin, one a line:
                                        ``send_command MACHINE COMMAND ARGUMENT``,
                                        ``get_status MACHINE``, ``disconnect``, ``exit``.
    run_python_example.py connect URL   the "Python con websockets" snippet
                                        (connect_example.py), with its "ws://localhost:8765"
                                        literal replaced by URL and nothing else changed.

The examples print what they print; lines of this harness start with ``[harness]``. With
``client``, the frames the legacy client reads are also shown, from its own debug log, as
``[frame] ...`` lines (observation only: nothing of the class is wrapped or replaced).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC_URI = '"ws://localhost:8765"'


def say(text: str) -> None:
    print(f"[harness] {text}", flush=True)


class FrameLog(logging.Handler):
    """Shows the frames the legacy client receives (its DEBUG lines ``< TEXT '...'``)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("< TEXT"):
            print(f"[frame] {message}", flush=True)


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def drive_client(url: str) -> None:
    sys.path.insert(0, str(HERE))
    from client_example import CarouselWebSocketClient

    frames = logging.getLogger("websockets.client")
    frames.setLevel(logging.DEBUG)
    frames.addHandler(FrameLog())
    frames.propagate = False

    client = CarouselWebSocketClient(url)
    connecting = asyncio.create_task(client.connect())
    connecting.add_done_callback(lambda _task: say("connect() returned"))
    say("started connect()")
    commands = await stdin_lines()
    while line := (await commands.readline()).decode():
        words = line.split()
        if not words:
            continue
        match words:
            case ["send_command", machine_id, command, argument]:
                await client.send_command(machine_id, int(command), int(argument))
            case ["get_status", machine_id]:
                await client.get_status(machine_id)
            case ["disconnect"]:
                await client.disconnect()
                await asyncio.wait_for(connecting, 5)
            case ["exit"]:
                break
            case _:
                say(f"unknown command {line.strip()!r}")
                continue
        say(f"done {line.strip()}")
    connecting.cancel()


def run_snippet(url: str) -> None:
    path = HERE / "connect_example.py"
    source = path.read_text(encoding="utf-8")
    if source.count(SPEC_URI) != 1:
        raise SystemExit(f"{path.name} must contain {SPEC_URI} exactly once")
    code = compile(source.replace(SPEC_URI, repr(url)), str(path), "exec")
    say("running connect_example.py")
    exec(code, {"__name__": "__main__", "__file__": str(path)})


def main() -> None:
    mode, url = sys.argv[1:3]
    if mode == "client":
        asyncio.run(drive_client(url))
    elif mode == "connect":
        run_snippet(url)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    main()
