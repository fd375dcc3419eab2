"""[mqtt] settings: off by default, strict, the password only by environment variable."""

from __future__ import annotations

import pytest

from carousel_gateway.config import ConfigError, default_config, parse_config

MACHINE = {"id": "m1", "name": "M1", "kind": "simulator"}


def config(**mqtt):
    return parse_config({"machines": [MACHINE], "mqtt": mqtt})


def test_off_by_default_with_commands_off_and_sparkplug():
    mqtt = default_config().mqtt
    assert mqtt.enabled is False
    assert mqtt.commands_enabled is False
    assert mqtt.format == "sparkplug"
    assert mqtt.primary_host_id is None


def test_a_full_section():
    mqtt = config(
        enabled=True,
        host="broker.local",
        port=8883,
        ca="/etc/ca.pem",
        cert="/etc/c.pem",
        key="/etc/k.pem",
        username="gw",
        password_env="MQTT_PASSWORD",
        group_id="plant_1",
        edge_node_id="cell_a",
        keepalive_s=20,
        primary_host_id="scada",
        commands_enabled=True,
        format="json",
    ).mqtt
    assert mqtt.uses_tls and mqtt.port == 8883 and mqtt.format == "json"


@pytest.mark.parametrize(
    ("mqtt", "words"),
    [
        ({"password": "secret"}, "unknown key"),
        ({"password_env": "X"}, "needs a username"),
        ({"cert": "/c.pem"}, "cert and key"),
        ({"group_id": "a/b"}, "group_id"),
        ({"edge_node_id": "a+"}, "edge_node_id"),
        ({"format": "xml"}, "format"),
        ({"port": "1883"}, "remove the quotes"),
    ],
)
def test_mistakes_are_named(mqtt, words):
    with pytest.raises(ConfigError, match=words):
        config(**mqtt)
