"""The Python client a WMS developer installs loads the wire models, never the server.

Checked in a fresh interpreter: this test process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess  # nosec B404: runs this interpreter on a fixed snippet
import sys

SERVER_PACKAGES = (
    "carousel_gateway.api",
    "carousel_gateway.fleet",
    "carousel_gateway.plc",
    "carousel_gateway.store",
    "carousel_gateway.sim",
    "carousel_gateway.config",
    "carousel_gateway.app",
)

_SNIPPET = (
    "import json, sys\n"
    "import {module}\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.startswith('carousel_gateway'))))\n"
)


def loaded_after_import(module: str) -> list[str]:
    """The package's modules a fresh interpreter holds after ``import module``."""
    result = subprocess.run(  # nosec B603: fixed arguments, no shell
        [sys.executable, "-c", _SNIPPET.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def server_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in SERVER_PACKAGES)]


def test_client_loads_no_server_module() -> None:
    loaded = loaded_after_import("carousel_gateway.client")
    assert "carousel_gateway.wire" in loaded
    assert server_modules(loaded) == []


def test_wire_loads_nothing_but_the_error_table() -> None:
    loaded = loaded_after_import("carousel_gateway.wire")
    assert set(loaded) <= {
        "carousel_gateway",
        "carousel_gateway.errors",
        "carousel_gateway.wire",
        "carousel_gateway.wire.clock",
        "carousel_gateway.wire.common",
        "carousel_gateway.wire.inbound",
        "carousel_gateway.wire.jobs",
        "carousel_gateway.wire.outbound",
    }
