"""MACHINE_NOT_FOUND names the id asked for and the valid ones (ten at most, then "...")."""

from __future__ import annotations

import pytest

from carousel_gateway.config import parse_config
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.fleet import SHOWN_MACHINE_IDS, Fleet, machine_not_found


def test_names_the_id_asked_for_and_every_valid_one():
    error = machine_not_found(["machine_9"], ["machine_1", "machine_2"])
    assert error.code is ErrorCode.MACHINE_NOT_FOUND
    assert error.machine_id == "machine_9"
    assert error.message == "Machine not found: 'machine_9'; valid ids: machine_1, machine_2"


def test_lists_the_first_ten_valid_ids_then_dots():
    known = [f"m{i}" for i in range(25)]
    error = machine_not_found(["nope"], known)
    listed = error.message.split("valid ids: ", 1)[1]
    assert listed == ", ".join(known[:SHOWN_MACHINE_IDS]) + ", ..."


def test_an_absurd_id_is_cut_and_not_echoed_as_machine_id():
    error = machine_not_found(["x" * 500], ["machine_1"])
    assert len(error.message) < 200 and error.machine_id is None
    assert machine_not_found([42], ["machine_1"]).message.startswith("Machine not found: 42;")


async def test_fleet_get_raises_it():
    config = parse_config(
        {"machines": [{"id": "machine_1", "name": "One", "host": "127.0.0.1", "port": 1}]}
    )
    fleet = Fleet(config.machines)
    with pytest.raises(GatewayError) as raised:
        fleet.get("machine_2")
    assert raised.value.message == "Machine not found: 'machine_2'; valid ids: machine_1"
