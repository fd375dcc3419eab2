"""Unit tests for carousel_gateway.config and the ``config check`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carousel_gateway.cli import app
from carousel_gateway.config import (
    ConfigError,
    GatewayConfig,
    default_config,
    load_config,
    parse_config,
)
from carousel_gateway.plc.protocol import DEFAULT_LAYOUT, WORD_LAYOUT

GOOD_TOML = """\
log_level = "DEBUG"

[websocket]
port = 9000

[http]
port = 8080

[[auth.tokens]]
name = "wms"
role = "operator"
sha256 = "{digest}"

[[machines]]
id = "m1"
name = "Carrusel Norte"
host = "10.0.0.11"
port = 3200
positions = 40
position_base = 0
description = "aisle 3"

[machines.reply]
reply_length = 200
status_offset = 0
position_offset = 2

[[machines]]
id = "m2"
name = "Sim"
kind = "simulator"
port = 0

[machines.simulator]
embedded = true
seconds_per_position = 0.5
start_position = 30
""".format(digest="ab" * 32)


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def machine_toml(**fields: object) -> str:
    """One [[machines]] table; values are written as TOML literals via json.dumps."""
    body = {"id": "m1", "name": "Carrusel", **fields}
    return "[[machines]]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in body.items()
    )


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.problems, "a ConfigError must list at least one problem"
    assert str(error) == "\n".join(error.problems)
    return error.problems


# -- defaults ------------------------------------------------------------------------------


def test_default_config_has_two_embedded_simulators() -> None:
    config = default_config()
    assert [m.id for m in config.machines] == ["machine_1", "machine_2"]
    assert [m.name for m in config.machines] == ["Carrusel Principal", "Carrusel Secundario"]
    for machine in config.machines:
        assert machine.kind == "simulator"
        assert machine.embedded_simulator is True
        assert machine.simulator is not None and machine.simulator.embedded is True
        assert machine.positions == 30
        assert machine.position_base == 1
        assert machine.port == 0
        assert machine.host == "127.0.0.1"
        assert machine.type_label == "Simulator"
        assert machine.reply.to_layout() == DEFAULT_LAYOUT
        assert machine.allowed_commands == (0, 1)


def test_load_config_none_gives_the_default() -> None:
    assert load_config(None) == default_config()


def test_default_auth_is_disabled() -> None:
    config = default_config()
    assert config.auth.enabled is False
    assert config.log_level == "INFO"
    assert config.websocket.port == 8765
    assert config.http.port == 5000


# -- TOML ----------------------------------------------------------------------------------


def test_load_good_toml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD_TOML))
    assert isinstance(config, GatewayConfig)
    assert config.log_level == "DEBUG"
    assert config.websocket.port == 9000
    assert config.http.port == 8080
    assert config.auth.enabled is True
    assert config.auth.tokens[0].role == "operator"

    m1, m2 = config.machines
    assert (m1.id, m1.name, m1.host, m1.port) == ("m1", "Carrusel Norte", "10.0.0.11", 3200)
    assert (m1.kind, m1.type_label, m1.embedded_simulator) == ("plc", "Real PLC", False)
    assert (m1.positions, m1.position_base, m1.description) == (40, 0, "aisle 3")
    assert m1.reply.to_layout() == WORD_LAYOUT

    assert (m2.kind, m2.port, m2.embedded_simulator) == ("simulator", 0, True)
    assert m2.simulator is not None
    assert m2.simulator.seconds_per_position == 0.5
    assert m2.simulator.start_position == 30
    assert m2.positions == 30  # the default


def test_minimal_toml_uses_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, machine_toml()))
    (machine,) = config.machines
    assert (machine.host, machine.port, machine.kind) == ("127.0.0.1", 3200, "plc")
    assert machine.positions == 30
    assert machine.reply.to_layout() == DEFAULT_LAYOUT


# -- legacy JSON ---------------------------------------------------------------------------


def test_legacy_json_maps_to_machines(tmp_path: Path) -> None:
    legacy = {
        "plc_machines": [
            {
                "id": "machine_1",
                "name": "Carrusel Principal",
                "ip": "192.168.1.50",
                "port": 3200,
                "simulator": False,
                "description": "Linea 1",
            },
            {
                "id": "machine_2",
                "name": "Carrusel Secundario",
                "ip": "127.0.0.1",
                "port": 3201,
                "simulator": True,
                "description": "Simulador",
            },
        ]
    }
    config = load_config(write(tmp_path, json.dumps(legacy), "config.json"))
    m1, m2 = config.machines
    assert (m1.id, m1.name, m1.host, m1.port) == (
        "machine_1",
        "Carrusel Principal",
        "192.168.1.50",
        3200,
    )
    assert (m1.kind, m1.description) == ("plc", "Linea 1")
    assert (m2.id, m2.host, m2.port, m2.kind) == ("machine_2", "127.0.0.1", 3201, "simulator")
    assert m2.description == "Simulador"
    assert m2.type_label == "Simulator"
    assert m2.embedded_simulator is False  # an external simulator, reached over TCP


def test_legacy_json_defaults_name_and_port(tmp_path: Path) -> None:
    legacy = {"plc_machines": [{"id": "c7", "ip": "10.1.1.7"}]}
    (machine,) = load_config(write(tmp_path, json.dumps(legacy), "old.json")).machines
    assert (machine.name, machine.port, machine.kind) == ("c7", 3200, "plc")


def test_json_in_the_new_shape_is_accepted(tmp_path: Path) -> None:
    data = {"machines": [{"id": "m1", "name": "A", "host": "10.0.0.2"}]}
    (machine,) = load_config(write(tmp_path, json.dumps(data), "new.json")).machines
    assert machine.host == "10.0.0.2"


def test_legacy_json_unknown_key(tmp_path: Path) -> None:
    legacy = {"plc_machines": [{"id": "m1", "name": "A", "ip": "10.0.0.1", "rack": 4}]}
    path = write(tmp_path, json.dumps(legacy), "old.json")
    assert problems_of(path) == [f"{path}: plc_machines[0].rack: unknown key"]


def test_legacy_json_without_machine_list(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"plc_machines": {"id": "m1"}}), "old.json")
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: ")
    assert "plc_machines" in line


def test_legacy_json_errors_name_the_fields_of_the_file(tmp_path: Path) -> None:
    """A problem in a legacy file must name the field as written there (``ip``, not ``host``).

    The plant engineer fixes the JSON file; a line naming ``machines[0] (m1).host`` points at
    keys the file does not contain.
    """
    legacy = {"plc_machines": [{"id": "m1", "name": "A", "ip": 42, "port": 3200}]}
    path = write(tmp_path, json.dumps(legacy), "old.json")
    problems = problems_of(path)
    assert any(
        line.startswith(f"{path}: plc_machines[0]") and ".ip" in line for line in problems
    ), problems


# -- errors --------------------------------------------------------------------------------


def test_duplicate_id(tmp_path: Path) -> None:
    text = machine_toml(port=3200) + machine_toml(port=3201, host="10.0.0.2")
    path = write(tmp_path, text)
    assert problems_of(path) == [f"{path}: machines: duplicate machine id 'm1'"]


def test_port_70000(tmp_path: Path) -> None:
    path = write(tmp_path, machine_toml(port=70000) + machine_toml(id="m2", name="B"))
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: machines[0] (m1).port: ")
    assert "65535" in line


def test_one_bad_machine_gives_exactly_one_line(tmp_path: Path) -> None:
    """One problem, one line: no extra line about the machine list being empty."""
    path = write(tmp_path, machine_toml(port=70000))
    problems = problems_of(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: machines[0] (m1).port: ")


def test_unknown_key_in_machine(tmp_path: Path) -> None:
    path = write(tmp_path, machine_toml(colour="red") + machine_toml(id="m2", name="B"))
    assert problems_of(path) == [f"{path}: machines[0] (m1).colour: unknown key"]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'colour = "red"\n' + machine_toml())
    assert problems_of(path) == [f"{path}: colour: unknown key"]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("status_offset = 5", "status_offset must be in 0..1, got 5"),
        ("position_offset = 2", "position_offset must be in 0..1, got 2"),
        ("position_offset = 0", "status_offset and position_offset must differ"),
        ("reply_length = 200\nposition_offset = 200", "position_offset must be in 0..199"),
    ],
)
def test_bad_reply_layout_offsets(tmp_path: Path, reply: str, message: str) -> None:
    text = machine_toml() + "[machines.reply]\n" + reply + "\n" + machine_toml(id="m2", name="B")
    path = write(tmp_path, text)
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: machines[0] (m1).reply: ")
    assert message in line


def test_port_zero_on_a_real_plc(tmp_path: Path) -> None:
    path = write(tmp_path, machine_toml(port=0) + machine_toml(id="m2", name="B"))
    (line,) = problems_of(path)
    assert line == (
        f"{path}: machines[0] (m1): "
        "port 0 (pick a free port) is only valid for an embedded simulator"
    )


def test_port_zero_on_a_non_embedded_simulator(tmp_path: Path) -> None:
    text = machine_toml(port=0, kind="simulator") + "[machines.simulator]\nembedded = false\n"
    text += machine_toml(id="m2", name="B")
    (line,) = problems_of(write(tmp_path, text))
    assert "port 0" in line


def test_kind_simulator_alone_is_an_embedded_simulator_on_a_free_port(tmp_path: Path) -> None:
    """A simulator nobody starts would simulate nothing: ``kind = "simulator"`` alone is one
    the gateway starts itself, on a free loopback port (Modbus too, with that telemetry)."""
    text = machine_toml(kind="simulator") + machine_toml(
        id="m2", name="B", kind="simulator", telemetry="modbus"
    )
    m1, m2 = load_config(write(tmp_path, text)).machines
    assert (m1.embedded_simulator, m1.host, m1.port) == (True, "127.0.0.1", 0)
    assert m1.simulator is not None and m1.simulator.embedded is True
    assert (m2.embedded_simulator, m2.port, m2.modbus_port) == (True, 0, 0)


def test_kind_simulator_keeps_an_explicit_port(tmp_path: Path) -> None:
    (machine,) = load_config(write(tmp_path, machine_toml(kind="simulator", port=3300))).machines
    assert (machine.embedded_simulator, machine.port) == (True, 3300)


def test_embedded_false_points_at_a_simulator_run_elsewhere(tmp_path: Path) -> None:
    text = machine_toml(kind="simulator", host="10.0.0.9") + "[machines.simulator]\n"
    text += "embedded = false\n"
    (machine,) = load_config(write(tmp_path, text)).machines
    assert (machine.embedded_simulator, machine.host, machine.port) == (False, "10.0.0.9", 3200)


@pytest.mark.parametrize(
    ("line", "location", "message"),
    [
        ('[http]\nport = "5000"\n', "http.port", 'a whole number, not the string "5000"'),
        ("[websocket]\nport = 8765.0\n", "websocket.port", "a whole number, not the number"),
        ('[journal]\nenabled = "yes"\n', "journal.enabled", 'true or false, not the string "yes"'),
        ("[journal]\nenabled = 1\n", "journal.enabled", "true or false, not the number 1"),
        ("[journal]\npath = 5\n", "journal.path", "a string (in quotes), not the number 5"),
        ('log_level = "INFO"\nwebsocket = 5\n', "websocket", "a table, not the number 5"),
    ],
)
def test_types_are_strict_and_the_message_says_how_to_write_it(
    tmp_path: Path, line: str, location: str, message: str
) -> None:
    path = write(tmp_path, line + machine_toml())
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: {location}: must be {message}"), problem


def test_a_quoted_number_is_told_to_lose_its_quotes(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nport = "5000"\n' + machine_toml(poll_idle_s="0.5"))
    assert problems_of(path) == [
        f'{path}: http.port: must be a whole number, not the string "5000" (remove the quotes)',
        f"{path}: machines[0] (m1).poll_idle_s: must be a number, "
        'not the string "0.5" (remove the quotes)',
    ]


def test_lists_are_still_lists_and_their_items_strict(tmp_path: Path) -> None:
    ok = load_config(write(tmp_path, machine_toml(allowed_commands=[0, 1, 5])))
    assert ok.machines[0].allowed_commands == (0, 1, 5)
    path = write(tmp_path, machine_toml(allowed_commands=[0, "1"]), "bad.toml")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: machines[0] (m1).allowed_commands[1]: must be a whole")


def test_a_float_setting_takes_a_whole_number(tmp_path: Path) -> None:
    (machine,) = load_config(write(tmp_path, machine_toml(poll_idle_s=2))).machines
    assert machine.poll_idle_s == 2.0


def test_simulator_table_needs_kind_simulator(tmp_path: Path) -> None:
    text = machine_toml() + "[machines.simulator]\nembedded = true\n"
    text += machine_toml(id="m2", name="B")
    (line,) = problems_of(write(tmp_path, text))
    assert "kind = 'simulator'" in line


def test_allowed_commands_must_include_status_and_move(tmp_path: Path) -> None:
    path = write(tmp_path, machine_toml(allowed_commands=[1, 7]) + machine_toml(id="m2", name="B"))
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: machines[0] (m1): ")
    assert "allowed_commands" in line


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    text = machine_toml(port=70000, colour="red") + machine_toml(id="m2", name="B")
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 2, problems
    assert any(line.startswith(f"{path}: machines[0] (m1).port: ") for line in problems)
    assert f"{path}: machines[0] (m1).colour: unknown key" in problems


def test_second_machine_is_named_by_index_and_id(tmp_path: Path) -> None:
    text = machine_toml() + machine_toml(id="north", name="B", positions=1)
    path = write(tmp_path, text)
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: machines[1] (north).positions: ")


def test_no_machines(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "INFO"\n')
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: machines: ")


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[[machines]\nid = \n")
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: not valid toml: ")


def test_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "{not json", "old.json")
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: not valid json: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: cannot read")


def test_parse_config_uses_the_source_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"machines": [{"id": "m1", "name": "A", "port": 70000}]}, source="inline")
    assert info.value.problems[0].startswith("inline: machines[0] (m1).port: ")


# -- CLI -----------------------------------------------------------------------------------


def test_cli_config_check_bad_file_exits_2_and_prints_the_lines(tmp_path: Path) -> None:
    text = machine_toml(port=70000) + machine_toml(id="m1", name="B", colour="red")
    path = write(tmp_path, text)
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert f"{path}: machines[0] (m1).port: " in result.output
    assert f"{path}: machines[1] (m1).colour: unknown key" in result.output
    assert "Traceback" not in result.output


def test_cli_config_check_good_file_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_TOML)
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{path}: OK (2 machines: m1, m2)"


def test_cli_config_check_good_legacy_json_exits_0(tmp_path: Path) -> None:
    legacy = {"plc_machines": [{"id": "a", "name": "A", "ip": "10.0.0.1", "port": 3200}]}
    path = write(tmp_path, json.dumps(legacy), "old.json")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK (1 machine: a)" in result.output


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://db/carousel", "must start with postgresql://"),
        ("postgresql://gateway:secret@db/carousel", "must not hold a password"),
    ],
)
def test_journal_url_is_postgresql_without_a_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"journal": {"url": url}, "machines": [{"id": "m1", "name": "A"}]})
    (line,) = error.value.problems
    assert line.startswith("<config>: journal.url: ") and problem in line
    assert "secret" not in line


def test_journal_url_with_hosts_and_options_is_accepted() -> None:
    url = "postgresql://gateway@db1:5432,db2:5432/carousel?target_session_attrs=read-write"
    config = parse_config({"journal": {"url": url}, "machines": [{"id": "m1", "name": "A"}]})
    assert config.journal.url == url
