"""The spec's own client examples, unmodified, against a real gateway.

The files in ``tests/spec_examples/`` are byte-for-byte copies of the examples in the spec
(``websocket-api.md``): the complete JavaScript client class, the "Establecer Conexión"
snippet, the asynchronous Python client class and the "Python con websockets" snippet. Small
harnesses run them: Node with the ``ws`` package as the browser ``WebSocket``
(``harness.js``), and the legacy ``websockets`` client (< 14, which the Python class needs for
``websocket.closed``) in ``.venv-spec`` (``run_python_example.py``). ``make test`` installs
both (``tests/spec_examples/deps.mk``).

The tests wait on what the examples print, never on fixed sleeps, and kill every process.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "spec_examples"
SPEC_PYTHON = REPO / ".venv-spec" / "bin" / "python"
VERBATIM_MARKER = "# ---- verbatim from the spec below this line ----\n"
INSTALL_HINT = "run `make test` (it installs tests/spec_examples/deps.mk's prerequisites)"
WAIT = 10.0  # seconds for any one expected output; a healthy run needs well under one


def url(gateway: Any) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("Node.js (`node`) is not installed; the JavaScript examples need it")
    if not (EXAMPLES / "node_modules" / "ws" / "package.json").exists():
        pytest.fail(f"tests/spec_examples/node_modules has no `ws`: {INSTALL_HINT}")
    return found


def spec_python() -> str:
    if not SPEC_PYTHON.exists():
        pytest.fail(f".venv-spec is missing: {INSTALL_HINT}")
    return str(SPEC_PYTHON)


class Process:
    """A harness subprocess: its stdout lines (parsed), kept and awaitable."""

    def __init__(self, process: asyncio.subprocess.Process, parse: Callable[[str], Any]) -> None:
        self.process = process
        self.parse = parse
        self.lines: list[Any] = []
        self.stderr = b""
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, *argv: str, parse: Callable[[str], Any]) -> Process:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=EXAMPLES,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        )
        return cls(process, parse)

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(self.parse(raw.decode("utf-8", "replace").rstrip("\n")))
            self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = await self.process.stderr.read()

    def transcript(self) -> str:
        shown = "\n".join(str(line) for line in self.lines[-40:])
        return f"stdout (last lines):\n{shown}\nstderr:\n{self.stderr.decode(errors='replace')}"

    async def wait_for(self, predicate: Callable[[Any], bool], *, start: int = 0) -> Any:
        """The first line from index ``start`` on that matches; waits (bounded) for it."""
        index = start
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    while index < len(self.lines):
                        line = self.lines[index]
                        index += 1
                        if predicate(line):
                            return line
                    if self._readers[0].done():
                        raise AssertionError("the harness exited before printing it")
                    self._changed.clear()
                    await self._changed.wait()
        except (TimeoutError, AssertionError) as exc:
            seen = self.transcript()
            raise AssertionError(f"expected output not seen ({exc!r})\n{seen}") from None

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def exit_code(self) -> int:
        async with asyncio.timeout(WAIT):
            return await self.process.wait()

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        for reader in self._readers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 2)


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Any]]:
    processes: list[Process] = []

    async def start(*argv: str, parse: Callable[[str], Any]) -> Process:
        process = await Process.start(*argv, parse=parse)
        processes.append(process)
        return process

    yield start
    for process in processes:
        await process.kill()


# -- JavaScript ---------------------------------------------------------------------------


def json_line(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except ValueError:
        return {"kind": "text", "text": text}


def printed(level: str, first: str, check: Callable[[list[Any]], bool] = lambda _a: True):
    """Predicate: the example called console.<level>(first, ...) and ``check(args)`` holds."""

    def predicate(line: dict[str, Any]) -> bool:
        return (
            line.get("kind") == "console"
            and line["level"] == level
            and line["args"][:1] == [first]
            and check(line["args"])
        )

    return predicate


def frame(kind: str, message_type: str, check: Callable[[dict[str, Any]], bool] = lambda _d: True):
    """Predicate: the socket sent/received (``kind``) a message of ``message_type``."""

    def predicate(line: dict[str, Any]) -> bool:
        data = line.get("data")
        return (
            line.get("kind") == kind
            and isinstance(data, dict)
            and data.get("type") == message_type
            and check(data)
        )

    return predicate


def js_console(node_process: Process, *levels: str) -> list[list[Any]]:
    return [
        line["args"]
        for line in node_process.lines
        if line.get("kind") == "console" and line["level"] in levels
    ]


async def js_call(node_process: Process, call: str, *args: Any) -> None:
    start = len(node_process.lines)
    await node_process.send(json.dumps({"call": call, "args": list(args)}))
    await node_process.wait_for(lambda line: line.get("kind") in ("done", "fail"), start=start)
    assert not [line for line in node_process.lines if line.get("kind") == "fail"], (
        node_process.transcript()
    )


async def test_javascript_client_class_works_against_the_gateway(gateway, spawn):
    js = await spawn(node(), "harness.js", "client", url(gateway), parse=json_line)
    await js.wait_for(lambda line: line.get("kind") == "ready")
    await js_call(js, "connect")

    opened = await js.wait_for(printed("log", "Conectado al WebSocket"))
    welcome = await js.wait_for(printed("log", "Bienvenida recibida:"))
    data = welcome["args"][1]
    assert data["type"] == "welcome" and data["mode"] == "multi-plc"
    assert [m["id"] for m in data["machines"]] == ["machine_1", "machine_2"]

    # onopen subscribes (status_updates, every machine); the server confirms it and sends the
    # current state, which reaches onStatusUpdate.
    subscribe = await js.wait_for(frame("sent", "subscribe"), start=js.lines.index(opened))
    assert subscribe["data"]["subscription_type"] == "status_updates"
    assert "machine_ids" not in subscribe["data"]
    confirmed = await js.wait_for(frame("recv", "subscription_confirmed"))
    assert confirmed["data"]["machine_ids"] == ["machine_1", "machine_2"]
    update = await js.wait_for(printed("log", "Estado actualizado:"))
    status = update["args"][1]
    assert set(status) == {"machine_1", "machine_2"}
    assert status["machine_1"]["status"]["READY"] == "OK"
    assert status["machine_1"]["position"] == 1
    assert status["machine_1"]["connection_status"] == "connected"

    mark = len(js.lines)
    await js_call(js, "sendCommand", "machine_1", 1, 25)
    result = await js.wait_for(printed("log", "Resultado de comando:"), start=mark)
    command_result = result["args"][1]
    assert command_result["type"] == "command_result"
    assert command_result["machine_id"] == "machine_1"
    assert command_result["success"] is True
    assert command_result["data"]["command_sent"] == 1
    assert command_result["data"]["argument"] == 25
    assert command_result["data"]["result"] == "Comando ejecutado correctamente"
    # The move itself shows up through onStatusUpdate, down to its arrival at 25.
    await js.wait_for(
        printed(
            "log",
            "Estado actualizado:",
            lambda args: (
                args[1].get("machine_1", {}).get("position") == 25
                and args[1]["machine_1"]["status"]["RUN"] == "Detenido"
            ),
        ),
        start=mark,
    )
    assert gateway.simulators["machine_1"].model.position_index == 24

    mark = len(js.lines)
    await js_call(js, "getStatus", "machine_1")
    reply = await js.wait_for(frame("recv", "machine_status"), start=mark)
    assert reply["data"]["machine_id"] == "machine_1"
    assert reply["data"]["position"] == 25
    assert reply["data"]["status"]["READY"] == "OK"
    assert reply["data"]["connection_status"] == "connected"

    await js_call(js, "disconnect")
    await js.wait_for(printed("log", "Conexión cerrada:"))

    assert js_console(js, "error", "warn") == [], js.transcript()


async def test_javascript_uso_section_calls_before_the_socket_opens(gateway, spawn):
    """The spec's "Uso" lines call sendCommand/getStatus right after connect(): the socket is
    not open yet, so the example itself warns and sends nothing. It then connects fine."""
    js = await spawn(node(), "harness.js", "client", url(gateway), parse=json_line)
    await js.wait_for(lambda line: line.get("kind") == "ready")
    uso = [["connect"], ["sendCommand", "machine_1", 1, 25], ["getStatus", "machine_1"]]
    await js.send(json.dumps({"calls": uso}))  # in one go, like the "Uso" lines
    await js.wait_for(lambda line: line.get("kind") == "done")
    assert js_console(js, "warn") == [["WebSocket no está conectado"]] * 2
    await js.wait_for(printed("log", "Bienvenida recibida:"))
    await js.wait_for(printed("log", "Estado actualizado:"))
    assert [line["data"]["type"] for line in js.lines if line.get("kind") == "sent"] == [
        "subscribe"
    ]
    assert gateway.simulators["machine_1"].model.moves_started == 0
    assert js_console(js, "error") == [], js.transcript()


async def test_javascript_connection_snippet(gateway, spawn):
    js = await spawn(node(), "harness.js", "connect", url(gateway), parse=json_line)
    await js.wait_for(printed("log", "Conectado al WebSocket"))
    received = await js.wait_for(printed("log", "Mensaje recibido:"))
    assert received["args"][1]["type"] == "welcome"
    await js.send(json.dumps({"eval": "ws.close()"}))
    closed = await js.wait_for(printed("log", "Conexión cerrada:"))
    assert closed["args"][1] in (1000, 1005)
    assert js_console(js, "error", "warn") == [], js.transcript()


# -- Python -------------------------------------------------------------------------------


def printed_value(prefix: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(prefix)


def value_after(line: str, prefix: str) -> Any:
    """The Python literal (a dict's repr) the example printed after ``prefix``."""
    return ast.literal_eval(line[len(prefix) :])


async def test_python_client_class_works_against_the_gateway(gateway, spawn):
    py = await spawn(
        spec_python(), "-u", "run_python_example.py", "client", url(gateway), parse=str
    )
    await py.wait_for(printed_value("Conectado al WebSocket"))
    welcome = value_after(await py.wait_for(printed_value("Bienvenida: ")), "Bienvenida: ")
    assert welcome["type"] == "welcome"
    assert [m["id"] for m in welcome["machines"]] == ["machine_1", "machine_2"]

    prefix = "Estado actualizado: "
    status = value_after(await py.wait_for(printed_value(prefix)), prefix)
    assert set(status) == {"machine_1", "machine_2"}
    assert status["machine_1"]["status"]["READY"] == "OK"
    assert status["machine_1"]["position"] == 1
    assert status["machine_1"]["connection_status"] == "connected"

    mark = len(py.lines)
    await py.send("send_command machine_1 1 25")
    prefix = "Resultado de comando: "
    result = value_after(await py.wait_for(printed_value(prefix), start=mark), prefix)
    assert result["type"] == "command_result"
    assert result["machine_id"] == "machine_1"
    assert result["success"] is True
    assert result["data"]["command_sent"] == 1 and result["data"]["argument"] == 25
    assert result["data"]["result"] == "Comando ejecutado correctamente"
    await py.wait_for(
        lambda line: (
            line.startswith("Estado actualizado: ")
            and value_after(line, "Estado actualizado: ").get("machine_1", {}).get("position") == 25
        ),
        start=mark,
    )
    assert gateway.simulators["machine_1"].model.position_index == 24

    # The class has no branch for machine_status (it ignores it); the reply shows up in the
    # legacy client's own frame log.
    mark = len(py.lines)
    await py.send("get_status machine_1")
    await py.wait_for(printed_value("[harness] done get_status"), start=mark)
    await py.wait_for(
        lambda line: (
            line.startswith("[frame] < TEXT")
            and re.search(r'"type":\s*"machine_status"', line) is not None
        ),
        start=mark,
    )

    await py.send("disconnect")
    await py.wait_for(printed_value("[harness] connect() returned"))
    await py.send("exit")
    assert await py.exit_code() == 0, py.transcript()
    problems = [
        line
        for line in py.lines
        if line.startswith(("Error del servidor", "Error de conexión", "WebSocket no está"))
    ]
    assert problems == [], py.transcript()
    assert b"Traceback" not in py.stderr, py.transcript()


async def test_python_connection_snippet(gateway, spawn):
    py = await spawn(
        spec_python(), "-u", "run_python_example.py", "connect", url(gateway), parse=str
    )
    welcome = json.loads((await py.wait_for(printed_value("Bienvenida: ")))[len("Bienvenida: ") :])
    assert welcome["type"] == "welcome"
    # The snippet then asks for machine_1's status and prints every reply (forever: the
    # fixture kills it).
    reply = value_after(await py.wait_for(printed_value("Recibido: ")), "Recibido: ")
    assert reply["type"] == "machine_status"
    assert reply["machine_id"] == "machine_1"
    assert reply["status"]["READY"] == "OK"
    assert reply["position"] == 1
    assert reply["connection_status"] == "connected"
    assert py.process.returncode is None, py.transcript()


# -- the copies are the spec's text -------------------------------------------------------


def spec_path() -> Path:
    """The contract: the repository's copy (docs/spec), kept identical to shared/spec."""
    return REPO / "docs" / "spec" / "websocket-api.md"


def code_blocks(markdown: str) -> dict[str, list[str]]:
    """Fenced code blocks by the heading they are under."""
    blocks: dict[str, list[str]] = {}
    heading = ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```\w+\n(.*?)^```$", markdown, re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("#").strip()
        else:
            blocks.setdefault(heading, []).append(match.group(2))
    return blocks


def test_example_files_are_verbatim_copies_of_the_spec():
    path = spec_path()
    shared = REPO.parent / "shared" / "spec" / "websocket-api.md"
    if shared.is_file():  # where the shared folder exists, the copy must not have drifted
        assert shared.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    blocks = code_blocks(path.read_text(encoding="utf-8"))

    def copy(name: str) -> str:
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        return text.split(VERBATIM_MARKER, 1)[1] if name.endswith(".py") else text

    assert copy("client.js") == blocks["Cliente JavaScript Completo"][0]
    assert copy("connect.js") == blocks["Establecer Conexión"][0]
    assert copy("connect_example.py") == blocks["Python con websockets"][0]
    python_class = blocks["Cliente Python Asíncrono"][0]
    assert copy("client_example.py") == python_class[: python_class.index("\n# Uso\n")]
