"""The lease row's ``advertise_url``: both URLs of an instance, read back robustly."""

from __future__ import annotations

from carousel_gateway.ha.coordinator import advertised, parse_advertised


def test_both_urls_round_trip() -> None:
    text = advertised("http://10.0.0.5:8080", "ws://10.0.0.5:8765")
    assert parse_advertised(text) == ("http://10.0.0.5:8080", "ws://10.0.0.5:8765")


def test_a_plain_url_is_the_rest_one_and_junk_names_nothing() -> None:
    assert parse_advertised("http://10.0.0.5:8080") == ("http://10.0.0.5:8080", None)
    assert parse_advertised("") == (None, None)
    assert parse_advertised("[1, 2]") == (None, None)
    assert parse_advertised('{"http": 3, "ws": ""}') == (None, None)
