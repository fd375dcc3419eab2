"""The ``[ha]`` section: off by default, only on PostgreSQL, timings that can work."""

from __future__ import annotations

import pytest

from carousel_gateway.config import ConfigError, parse_config

MACHINES = [{"id": "m1", "name": "M1", "host": "127.0.0.1", "port": 3200}]
PG = "postgresql://gateway@127.0.0.1/carousel"


def test_ha_is_off_by_default() -> None:
    config = parse_config({"machines": MACHINES})
    assert config.ha.enabled is False
    assert config.ha.instance  # the host name


def test_ha_needs_the_journal_on_postgresql() -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        parse_config({"machines": MACHINES, "ha": {"enabled": True, "instance": "a"}})


def test_ha_on_postgresql() -> None:
    config = parse_config(
        {
            "machines": MACHINES,
            "journal": {"url": PG},
            "ha": {
                "enabled": True,
                "cell": "c7",
                "instance": "gw-a",
                "advertise_url": "http://10.0.0.5:8080",
                "advertise_ws_url": "ws://10.0.0.5:8765",
                "ttl_s": 1.5,
                "renew_s": 0.3,
                "margin_s": 0.3,
            },
        }
    )
    assert (config.ha.cell, config.ha.instance, config.ha.ttl_s) == ("c7", "gw-a", 1.5)


@pytest.mark.parametrize(
    ("timing", "why"),
    [
        ({"ttl_s": 1.0, "margin_s": 1.0}, "margin_s"),
        ({"ttl_s": 2.0, "renew_s": 1.6, "margin_s": 0.5}, "renew_s"),
    ],
)
def test_ha_timings_that_cannot_work_are_refused(timing: dict[str, float], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_config({"machines": MACHINES, "journal": {"url": PG}, "ha": timing})
