"""The REST API's OpenAPI document passes Redocly's recommended rules and Spectral's
``spectral:oas`` rules with no error and no warning.

The document is the app's own ``openapi()``, written to a temporary file. The linters are
Node packages pinned in ``tests/openapi/package.json`` (``make test`` installs them with
``npm ci``: ``tests/openapi/deps.mk``). Neither may reach the network: Redocly's telemetry
and update check are switched off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404: runs the pinned linters on a file this test wrote
from pathlib import Path
from typing import Any

import pytest

from carousel_gateway.api.auth import Authenticator
from carousel_gateway.api.http import RestApi, create_app
from carousel_gateway.config import AuthConfig, parse_config
from carousel_gateway.fleet.fleet import Fleet

HERE = Path(__file__).resolve().parent
BIN = HERE / "node_modules" / ".bin"
INSTALL_HINT = "run `make test` (it installs tests/openapi/deps.mk's prerequisites)"
ENV = {
    **os.environ,
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
    "NO_COLOR": "1",
}


def tool(name: str) -> str:
    if shutil.which("node") is None:
        pytest.fail("Node.js (`node`) is not installed; the OpenAPI linters need it")
    path = BIN / name
    if not path.exists():
        pytest.fail(f"tests/openapi/node_modules has no `{name}`: {INSTALL_HINT}")
    return str(path)


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's OpenAPI document (a fleet that is never started: nothing connects)."""
    config = parse_config(
        {"machines": [{"id": "machine_1", "name": "Carrusel", "host": "127.0.0.1"}]}
    )
    app = create_app(
        RestApi(Fleet(config.machines), simulators={}, authenticator=Authenticator(AuthConfig()))
    )
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(app.openapi(), indent=2), encoding="utf-8")
    return path


def run(*command: str, output: Path | None = None) -> Any:
    """Run a linter; its JSON report from stdout, or from ``output`` when given."""
    result = subprocess.run(  # nosec B603: fixed arguments, no shell
        command, capture_output=True, text=True, timeout=120, env=ENV, cwd=HERE, check=False
    )
    try:
        return json.loads(output.read_text(encoding="utf-8") if output else result.stdout)
    except (OSError, json.JSONDecodeError):
        pytest.fail(f"{command[0]} gave no JSON report (exit {result.returncode}): {result.stderr}")


def test_redocly_recommended_rules_pass(document):
    report = run(
        tool("redocly"), "lint", "--extends", "recommended", "--format", "json", str(document)
    )
    problems = [
        f"{p['severity']} {p['ruleId']}: {p['message']} at {p['location'][0]['pointer']}"
        for p in report["problems"]
    ]
    assert report["totals"]["errors"] == 0, problems
    assert report["totals"]["warnings"] == 0, problems


def test_spectral_oas_rules_pass(document, tmp_path):
    report = tmp_path / "spectral.json"
    results = run(
        tool("spectral"),
        "lint",
        "--ruleset",
        str(HERE / ".spectral.yaml"),
        "--format",
        "json",
        "--output",
        str(report),
        str(document),
        output=report,
    )
    problems = [f"{r['code']}: {r['message']} at {'.'.join(map(str, r['path']))}" for r in results]
    # Severity 0 is an error, 1 a warning (2 and 3: information and hints).
    assert [r for r in results if r["severity"] <= 1] == [], problems
