"""Schemathesis against the live gateway's /openapi.json: no server error, replies as declared.

Schemathesis and Hypothesis are synchronous, so they run in a worker thread while the event
loop of the test keeps serving the gateway (HTTP server, fleet and simulators). Generation is
derandomized with a bounded number of examples, so CI sees the same requests every run.

The gateway maps two error codes to 5xx on purpose: CONNECTION_ERROR (503) and PLC_TIMEOUT
(504) mean the PLC, not the gateway, failed. So the checks are split:

* ``test_no_server_error``: every operation but the link control, on healthy simulators.
  Nothing can legitimately break a PLC link there, so any 5xx at all (503 and 504 included)
  is a failure, as schemathesis' ``not_a_server_error`` has it.
* ``test_link_faults_give_only_declared_upstream_errors``: the link control too, so the
  fuzzer drops and stalls PLC links itself. A 503/504 is then expected, but only as the
  declared envelope with CONNECTION_ERROR/PLC_TIMEOUT; any other 5xx (500 above all) fails.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from carousel_gateway.api.guard import RateLimiter
from tests.integration.conftest import FAST_MACHINE, gateway_config

CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
UPSTREAM_CODES = {503: "CONNECTION_ERROR", 504: "PLC_TIMEOUT"}
LINK = "/v1/simulators/{machine_id}/link"
POSITIONS = 30  # the fast machines of tests/integration/conftest.py

# Raised inside schemathesis' own strategies, not by anything here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


def upstream_errors_only(ctx: Any, response: Any, case: Any) -> None:
    """5xx only as a declared PLC failure in the envelope; never anything else."""
    status = response.status_code
    if status < 500:
        return
    expected = UPSTREAM_CODES.get(status)
    body = response.json() if expected is not None else None
    assert body is not None and body.get("code") == expected, (
        f"server error {status} from {case.operation.label}: {response.text[:300]}"
    )


def pin_to_fleet(raw: dict[str, Any], machine_ids: list[str], *, bodies: bool) -> dict[str, Any]:
    """The schema narrowed to this fleet, so generated requests reach real machines.

    ``machine_id`` (path or query) becomes one of the fleet's ids (negative cases still send
    other strings, which must be 404). With ``bodies``, commands become STATUS/MOVE to a real
    bucket on a machine of the fleet (``/v1/command`` names it in the body), the
    ranges that machine config decides, so positive cases move carousels instead of mostly
    meeting INVALID_COMMAND. Only positive generation uses that: it is narrower than the
    API, so a "negative" case of it could be a valid request.
    """
    schema = copy.deepcopy(raw)
    fleet_id = {"type": "string", "enum": machine_ids}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "machine_id":
                    parameter["schema"] = fleet_id
                elif parameter["in"] == "query" and parameter["name"] == "machine_id":
                    parameter["schema"] = {"anyOf": [fleet_id, {"type": "null"}]}
    if bodies:
        models = schema["components"]["schemas"]
        bucket = {"type": "integer", "minimum": 1, "maximum": POSITIONS}
        for name in ("CommandRequest", "ShortcutCommandRequest"):
            models[name]["properties"]["command"] = {"type": "integer", "enum": [0, 1]}
            models[name]["properties"]["argument"] = {"anyOf": [bucket, {"type": "null"}]}
        models["ShortcutCommandRequest"]["properties"]["machine_id"] = fleet_id
        # Required on a gateway of several machines: left out, the request is a 400.
        required = models["ShortcutCommandRequest"].setdefault("required", [])
        if "machine_id" not in required:
            required.append("machine_id")
        models["MoveRequest"]["properties"]["position"] = bucket
    return schema


def has_inputs(raw: dict[str, Any], operation: Any) -> bool:
    definition = raw["paths"][operation.path][operation.method.lower()]
    return bool(definition.get("parameters") or definition.get("requestBody"))


def fuzz(
    base_url: str,
    machine_ids: list[str],
    *,
    include: Callable[[str], bool],
    checks: list[Any],
    examples_per_operation: int,
    pin: Callable[..., dict[str, Any]] | None = None,
) -> tuple[list[str], Counter[tuple[str, int]]]:
    """Fuzz the included operations, interleaved, in both generation modes.

    Returns the failures (one per mode: Hypothesis stops at the first) and how many replies
    of each status every operation gave.
    """
    served = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    replies: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        negative = mode is GenerationMode.NEGATIVE
        raw = pin_to_fleet(served, machine_ids, bodies=not negative)
        if pin is not None:
            raw = pin(raw, bodies=not negative)
        schema = schemathesis.openapi.from_dict(raw)
        operations = [
            op for op in (r.ok() for r in schema.get_all_operations()) if include(op.path)
        ]
        # Without parameters or a body nothing can be invalid: no negative case exists.
        usable = [op for op in operations if not negative or has_inputs(raw, op)]
        strategy = st.one_of(*(op.as_strategy(generation_mode=mode) for op in usable))
        mode_checks = [*checks, negative_data_rejection] if negative else checks
        run = scenario(
            strategy, base_url, mode_checks, examples_per_operation * len(usable), replies
        )
        try:
            run()
        except Exception as exc:
            failures.append(f"{mode.value}: {exc}")
    return failures, replies


def scenario(
    strategy: st.SearchStrategy[Any],
    base_url: str,
    checks: list[Any],
    max_examples: int,
    replies: Counter[tuple[str, int]],
) -> Callable[[], None]:
    """A derandomized Hypothesis test: call each generated case, then run the checks."""

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=10)
        replies[(case.operation.label, response.status_code)] += 1
        case.validate_response(response, checks=checks)

    return run


def fleet_ids(gateway: Any) -> list[str]:
    return list(gateway.fleet.ids)


async def test_no_server_error(gateway_factory):
    # Generous PLC timeouts: on a loaded CI machine a slow simulator reply must not become a
    # 504, since this run asserts that no 5xx happens at all.
    patient = {"request_timeout_s": 10.0, "connect_timeout_s": 5.0}
    machines = [
        {**FAST_MACHINE, "id": f"machine_{i}", "name": f"Carrusel {i}", **patient} for i in (1, 2)
    ]
    # Fuzzing, not flooding: neither the per-client nor the per-machine limit may turn the
    # run into 429s (it sends far more commands a second than a WMS would).
    unlimited = {"commands_per_machine_per_second": 1e6, "command_burst": 1_000_000}
    gateway = await gateway_factory(gateway_config(machines, limits=unlimited))
    gateway.http.api.limiter = RateLimiter(rate=1e6, burst=1_000_000)
    failures, replies = await asyncio.to_thread(
        fuzz,
        f"http://127.0.0.1:{gateway.http_port}",
        fleet_ids(gateway),
        include=lambda path: path != LINK,
        checks=[not_a_server_error, *CONFORMANCE],
        examples_per_operation=25,
    )
    print_replies(replies)
    assert not failures, "\n\n".join(failures)
    # Every operation was reached and (moves aside: the fuzzer's own faults may refuse them
    # all) answered with success at least once, so the run is not only error paths.
    called = {label for label, _ in replies}
    answered = {label for label, status in replies if status < 300}
    assert len(called) == 22, sorted(replies)
    # Pick jobs are off on this gateway (no workstations): their operations only refuse
    # here; test_job_operations_give_no_server_error fuzzes them with a workstation.
    refused = {"POST /v1/machines/{machine_id}/move", *JOB_OPERATIONS}
    assert called - answered <= refused, sorted(replies)


JOB_OPERATIONS = {
    "GET /v1/jobs",
    "POST /v1/jobs",
    "GET /v1/jobs/{job_id}",
    "POST /v1/jobs/{job_id}/lines/{line_id}/confirm",
    "POST /v1/jobs/{job_id}/pause",
    "POST /v1/jobs/{job_id}/resume",
    "POST /v1/jobs/{job_id}/cancel",
    "GET /v1/workstations",
    "GET /v1/workstations/{workstation_id}",
}
JOB_IDS = ["F-1", "F-2", "F-3"]


def pin_jobs(raw: dict[str, Any], *, bodies: bool) -> dict[str, Any]:
    """The schema narrowed to the test's workstation and a few job ids, so generated
    requests reach real jobs of the real engine (submitted, then confirmed, paused,
    resumed, cancelled in any order); with ``bodies``, lines name real buckets."""
    schema = copy.deepcopy(raw)
    station = {"type": "string", "enum": ["station_1"]}
    job_id = {"type": "string", "enum": JOB_IDS}
    line_id = {"type": "string", "enum": ["1", "2", "3"]}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                name, where = parameter["name"], parameter["in"]
                if where == "path" and name in ("workstation_id", "job_id", "line_id"):
                    parameter["schema"] = {
                        "workstation_id": station,
                        "job_id": job_id,
                        "line_id": line_id,
                    }[name]
                elif where == "query" and name == "workstation_id":
                    parameter["schema"] = {"anyOf": [station, {"type": "null"}]}
    if bodies:
        models = schema["components"]["schemas"]
        line = models["JobLineIn"]["properties"]
        line["line_id"] = line_id
        line["machine_id"] = {"type": "string", "enum": ["machine_1", "machine_2"]}
        line["position"] = {"type": "integer", "minimum": 1, "maximum": POSITIONS}
        line["quantity"] = {"type": "integer", "minimum": 1, "maximum": 5}
        job = models["JobSubmission"]["properties"]
        job["job_id"] = job_id
        job["workstation_id"] = station
        job["lines"]["maxItems"] = 3
        confirm = models["PickConfirmRequest"]["properties"]
        confirm["quantity_picked"] = {"type": "integer", "minimum": 0, "maximum": 5}
    return schema


async def test_job_operations_give_no_server_error(gateway_factory):
    """The job routes against the real engine, a workstation with both carousels."""
    machines = [{**FAST_MACHINE, "id": f"machine_{i}", "name": f"Carrusel {i}"} for i in (1, 2)]
    station = {"id": "station_1", "name": "Puesto 1", "machines": ["machine_1", "machine_2"]}
    gateway = await gateway_factory(gateway_config(machines, workstations=[station]))
    gateway.http.api.limiter = RateLimiter(rate=1e6, burst=1_000_000)
    failures, replies = await asyncio.to_thread(
        fuzz,
        f"http://127.0.0.1:{gateway.http_port}",
        fleet_ids(gateway),
        include=lambda path: path.startswith(("/v1/jobs", "/v1/workstations")),
        checks=[not_a_server_error, *CONFORMANCE],
        examples_per_operation=25,
        pin=pin_jobs,
    )
    print_replies(replies)
    assert not failures, "\n\n".join(failures)
    called = {label for label, _ in replies}
    answered = {label for label, status in replies if status < 300}
    assert called == JOB_OPERATIONS, sorted(replies)
    # A line is confirmed only once its carousel has arrived: the fuzzer may never catch one.
    confirm = "POST /v1/jobs/{job_id}/lines/{line_id}/confirm"
    assert called - answered <= {confirm}, sorted(replies)


async def test_link_faults_give_only_declared_upstream_errors(gateway_factory):
    # Short PLC timeouts keep a stalled link from costing the run more than a few seconds.
    fast = {"request_timeout_s": 0.2, "connect_timeout_s": 0.2, "breaker_cooldown_s": 0.1}
    machines = [
        {**FAST_MACHINE, "id": f"machine_{i}", "name": f"Carrusel {i}", **fast} for i in (1, 2)
    ]
    gateway = await gateway_factory(gateway_config(machines))
    gateway.http.api.limiter = RateLimiter(rate=1e6, burst=1_000_000)
    targets = {LINK, "/v1/machines/{machine_id}/command", "/v1/machines/{machine_id}/move"}
    failures, replies = await asyncio.to_thread(
        fuzz,
        f"http://127.0.0.1:{gateway.http_port}",
        fleet_ids(gateway),
        include=lambda path: path in targets,
        checks=[upstream_errors_only, *CONFORMANCE],
        examples_per_operation=20,
    )
    print_replies(replies)
    for server in gateway.simulators.values():
        server.link("resume")
    assert not failures, "\n\n".join(failures)
    # The fuzzer did break links, and the upstream errors it caused were the declared ones.
    assert sum(n for (_, status), n in replies.items() if status in UPSTREAM_CODES) > 0


def print_replies(replies: Counter[tuple[str, int]]) -> None:
    for (label, status), count in sorted(replies.items()):
        print(f"REPLIES {label} {status}: {count}")


@pytest.fixture(autouse=True)
def _quiet_access_log(caplog: pytest.LogCaptureFixture) -> None:
    """Hundreds of requests: keep uvicorn's access log out of failure reports."""
    caplog.set_level("WARNING", logger="uvicorn.access")
