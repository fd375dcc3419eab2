"""Unit tests for carousel_gateway.plc.status (the PLC status byte)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.plc.status import (
    IDLE_READY_REMOTE,
    StatusError,
    StatusKey,
    StatusWord,
)

BYTES = st.integers(min_value=0, max_value=255)

KEYS_IN_BIT_ORDER = [
    "READY",
    "RUN",
    "MODO_OPERACION",
    "ALARMA",
    "PARADA_EMERGENCIA",
    "VFD",
    "ERROR_POSICIONAMIENTO",
    "SENTIDO_GIRO",
]

# (label when the bit is 1, label when the bit is 0), from shared/domain.md, by meaning:
# e.g. RUN=1 means moving, PARADA_EMERGENCIA=1 means no e-stop (active-low).
LABELS = {
    "READY": ("OK", "Fallo"),
    "RUN": ("En movimiento", "Detenido"),
    "MODO_OPERACION": ("Remoto", "Manual"),
    "ALARMA": ("Activa", "Desactivada"),
    "PARADA_EMERGENCIA": ("Desactivada", "Activa"),
    "VFD": ("Fallo", "OK"),
    "ERROR_POSICIONAMIENTO": ("Fallo", "OK"),
    "SENTIDO_GIRO": ("Descendente", "Ascendente"),
}

FAULT_KEYS = {
    StatusKey.ALARMA,
    StatusKey.PARADA_EMERGENCIA,
    StatusKey.VFD,
    StatusKey.ERROR_POSICIONAMIENTO,
}

# Each single blocking condition applied to the idle byte 21 (0b0001_0101).
SINGLE_BLOCKERS = [
    pytest.param(21 & ~0b0000_0001, StatusKey.READY, id="ready-cleared"),
    pytest.param(21 | 0b0000_0010, StatusKey.RUN, id="run-set"),
    pytest.param(21 & ~0b0000_0100, StatusKey.MODO_OPERACION, id="manual-mode"),
    pytest.param(21 | 0b0000_1000, StatusKey.ALARMA, id="alarm-set"),
    pytest.param(21 & ~0b0001_0000, StatusKey.PARADA_EMERGENCIA, id="estop-pressed"),
    pytest.param(21 | 0b0010_0000, StatusKey.VFD, id="vfd-fault"),
    pytest.param(21 | 0b0100_0000, StatusKey.ERROR_POSICIONAMIENTO, id="positioning-error"),
]


def test_key_order_is_bit_order() -> None:
    assert [key.value for key in StatusKey] == KEYS_IN_BIT_ORDER


@given(BYTES)
def test_flags_round_trip(raw: int) -> None:
    word = StatusWord(raw)
    assert StatusWord.from_flags(word.flags()).raw == raw


@given(BYTES)
def test_flags_match_bits(raw: int) -> None:
    flags = StatusWord(raw).flags()
    assert list(flags) == [StatusKey(k) for k in KEYS_IN_BIT_ORDER]
    for bit, key in enumerate(KEYS_IN_BIT_ORDER):
        assert flags[StatusKey(key)] is bool(raw >> bit & 1)
        assert StatusWord(raw).bit(StatusKey(key)) == raw >> bit & 1


@given(st.dictionaries(st.sampled_from(KEYS_IN_BIT_ORDER), st.booleans()))
def test_from_flags_accepts_string_keys_and_missing_keys_are_zero(flags: dict) -> None:
    expected = sum(1 << KEYS_IN_BIT_ORDER.index(key) for key, value in flags.items() if value)
    assert StatusWord.from_flags(flags).raw == expected


@given(BYTES)
def test_labels_have_eight_keys_in_bit_order_with_spanish_labels(raw: int) -> None:
    labels = StatusWord(raw).labels()
    assert list(labels) == KEYS_IN_BIT_ORDER
    for bit, key in enumerate(KEYS_IN_BIT_ORDER):
        when_set, when_clear = LABELS[key]
        assert labels[key] == (when_set if raw >> bit & 1 else when_clear)


def test_idle_byte_has_no_blockers_and_no_faults() -> None:
    assert IDLE_READY_REMOTE == 21
    word = StatusWord(21)
    assert word.blockers() == ()
    assert word.faults() == ()


@pytest.mark.parametrize(("raw", "key"), SINGLE_BLOCKERS)
def test_each_single_condition_gives_exactly_its_blocker(raw: int, key: StatusKey) -> None:
    blockers = StatusWord(raw).blockers()
    assert [b.key for b in blockers] == [key]
    assert blockers[0].text  # a readable reason is given


@pytest.mark.parametrize(("raw", "key"), SINGLE_BLOCKERS)
def test_each_single_condition_is_a_fault_only_for_fault_keys(raw: int, key: StatusKey) -> None:
    expected = (key,) if key in FAULT_KEYS else ()
    assert StatusWord(raw).faults() == expected


@given(BYTES)
def test_sentido_giro_never_blocks(raw: int) -> None:
    with_bit = StatusWord(raw | 0x80)
    without_bit = StatusWord(raw & 0x7F)
    assert with_bit.blockers() == without_bit.blockers()
    assert all(b.key is not StatusKey.SENTIDO_GIRO for b in with_bit.blockers())


@given(BYTES)
def test_blockers_are_exactly_the_blocking_bits_in_bit_order(raw: int) -> None:
    expected = []
    if not raw & 0x01:
        expected.append(StatusKey.READY)
    if raw & 0x02:
        expected.append(StatusKey.RUN)
    if not raw & 0x04:
        expected.append(StatusKey.MODO_OPERACION)
    if raw & 0x08:
        expected.append(StatusKey.ALARMA)
    if not raw & 0x10:
        expected.append(StatusKey.PARADA_EMERGENCIA)
    if raw & 0x20:
        expected.append(StatusKey.VFD)
    if raw & 0x40:
        expected.append(StatusKey.ERROR_POSICIONAMIENTO)
    assert [b.key for b in StatusWord(raw).blockers()] == expected


@given(BYTES)
def test_faults_only_contain_fault_keys(raw: int) -> None:
    word = StatusWord(raw)
    faults = word.faults()
    assert set(faults) <= FAULT_KEYS
    blocker_keys = [b.key for b in word.blockers()]
    assert list(faults) == [key for key in blocker_keys if key in FAULT_KEYS]


@given(BYTES)
def test_properties_match_bits(raw: int) -> None:
    word = StatusWord(raw)
    assert word.ready is bool(raw & 0x01)
    assert word.running is bool(raw & 0x02)
    assert word.remote is bool(raw & 0x04)
    assert word.alarm is bool(raw & 0x08)
    assert word.emergency_stop is (not raw & 0x10)
    assert word.vfd_fault is bool(raw & 0x20)
    assert word.positioning_error is bool(raw & 0x40)
    assert word.descending is bool(raw & 0x80)


def test_observed_21_idle_ready_remote() -> None:
    word = StatusWord(21)
    assert (word.ready, word.running, word.remote) == (True, False, True)
    assert (word.alarm, word.emergency_stop, word.vfd_fault) == (False, False, False)
    assert (word.positioning_error, word.descending) == (False, False)
    assert word.labels() == {
        "READY": "OK",
        "RUN": "Detenido",
        "MODO_OPERACION": "Remoto",
        "ALARMA": "Desactivada",
        "PARADA_EMERGENCIA": "Desactivada",
        "VFD": "OK",
        "ERROR_POSICIONAMIENTO": "OK",
        "SENTIDO_GIRO": "Ascendente",
    }


def test_observed_23_moving_remote() -> None:
    word = StatusWord(23)
    assert word.running and word.remote and word.ready
    assert not word.descending
    assert word.labels()["RUN"] == "En movimiento"
    assert word.labels()["SENTIDO_GIRO"] == "Ascendente"
    assert [b.key for b in word.blockers()] == [StatusKey.RUN]
    assert word.faults() == ()


def test_observed_151_moving_downwards_remote() -> None:
    word = StatusWord(151)
    assert word.running and word.remote and word.ready and word.descending
    assert word.labels()["SENTIDO_GIRO"] == "Descendente"
    assert word.labels()["RUN"] == "En movimiento"
    assert [b.key for b in word.blockers()] == [StatusKey.RUN]
    assert word.faults() == ()


def test_observed_17_ready_manual() -> None:
    word = StatusWord(17)
    assert word.ready and not word.remote and not word.running
    assert word.labels()["MODO_OPERACION"] == "Manual"
    assert [b.key for b in word.blockers()] == [StatusKey.MODO_OPERACION]
    assert word.faults() == ()


def test_estop_pressed_is_active_low() -> None:
    assert StatusWord(0).emergency_stop is True
    assert StatusWord(0).labels()["PARADA_EMERGENCIA"] == "Activa"
    assert StatusWord(0x10).emergency_stop is False


@pytest.mark.parametrize("raw", [-1, 256, 1000, -256])
def test_out_of_range_raw_raises(raw: int) -> None:
    with pytest.raises(StatusError):
        StatusWord(raw)


@pytest.mark.parametrize("raw", [True, False, 21.0, "21", None, b"\x15"])
def test_bool_or_non_int_raw_raises(raw: object) -> None:
    with pytest.raises(StatusError):
        StatusWord(raw)  # type: ignore[arg-type]


@given(st.integers().filter(lambda n: not 0 <= n <= 255))
def test_any_int_outside_one_byte_raises(raw: int) -> None:
    with pytest.raises(StatusError):
        StatusWord(raw)


def test_status_error_is_a_value_error() -> None:
    assert issubclass(StatusError, ValueError)


def test_from_flags_rejects_unknown_key() -> None:
    with pytest.raises(ValueError):
        StatusWord.from_flags({"NOT_A_KEY": True})
