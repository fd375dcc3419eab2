"""The dashboard's message catalogues (carousel_gateway/web/i18n/*.json): one per language,
the same keys in each, no empty text, the same placeholders, and every key the page asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from carousel_gateway.fleet.lifecycle import FailReason

WEB = Path(__file__).resolve().parents[2] / "carousel_gateway" / "web"
I18N = WEB / "i18n"
LANGS = ("es", "en")
#: What a move_failed carries besides fault keys (fleet/lifecycle.py FailReason; and
#: ``failover_lost``: a MOVE of the previous active of an [ha] cell, left without outcome).
MOVE_FAILED = (*(reason.value for reason in FailReason), "failover_lost")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def catalogue(lang: str) -> dict[str, str]:
    data = json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_one_catalogue_per_language_and_nothing_else() -> None:
    assert sorted(path.stem for path in I18N.glob("*.json")) == sorted(LANGS)


def test_every_key_in_both_catalogues() -> None:
    es, en = catalogue("es"), catalogue("en")
    assert sorted(set(es) - set(en)) == []
    assert sorted(set(en) - set(es)) == []


@pytest.mark.parametrize("lang", LANGS)
def test_no_value_is_empty(lang: str) -> None:
    for key, value in catalogue(lang).items():
        assert isinstance(value, str) and value.strip(), (lang, key)


def test_same_placeholders_in_both_languages() -> None:
    es, en = catalogue("es"), catalogue("en")
    for key in es:
        assert set(PLACEHOLDER.findall(es[key])) == set(PLACEHOLDER.findall(en[key])), key


def test_every_key_the_page_names_exists() -> None:
    """Keys written out in index.html (data-i18n*) and app.js (t("...")); keys the script
    builds (flag.X.0, reason.X...) are checked in the browser tests."""
    html = "".join(
        (WEB / name).read_text(encoding="utf-8") for name in ("index.html", "station.html")
    )
    script = "".join(
        (WEB / name).read_text(encoding="utf-8") for name in ("app.js", "station.js", "failover.js")
    )
    named = set(re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', html))
    named |= set(re.findall(r'\bt\("([a-z_.A-Z]+)"', script))
    named |= set(re.findall(r'"([a-z]+\.[a-z_]+)"', script)) & set(catalogue("en"))
    assert len(named) > 30
    for lang in LANGS:
        assert sorted(named - set(catalogue(lang))) == [], lang


@pytest.mark.parametrize(
    "key",
    [
        *(f"{kind}.{reason}" for kind in ("reason", "advice") for reason in MOVE_FAILED),
        *(
            f"{kind}.{fault}"
            for kind in ("reason", "advice", "fault", "cleared")
            for fault in ("ALARMA", "PARADA_EMERGENCIA", "VFD", "ERROR_POSICIONAMIENTO")
        ),
        *(
            f"flag.{flag}.{bit}"
            for flag in (
                "READY",
                "RUN",
                "MODO_OPERACION",
                "ALARMA",
                "PARADA_EMERGENCIA",
                "VFD",
                "ERROR_POSICIONAMIENTO",
                "SENTIDO_GIRO",
            )
            for bit in (0, 1)
        ),
    ],
)
def test_the_wire_keys_have_words(key: str) -> None:
    """Every move-failed reason, fault key and status bit the wire carries has a text."""
    for lang in LANGS:
        assert key in catalogue(lang), (lang, key)
