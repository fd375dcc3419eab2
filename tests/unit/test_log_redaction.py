"""Log redaction: installed on purpose (by the composition root), once, for every logger."""

from __future__ import annotations

import logging

import pytest

from carousel_gateway.api.auth import REDACTED, install_log_redaction
from carousel_gateway.api.ws import WebSocketApi
from carousel_gateway.config import parse_config
from carousel_gateway.fleet.fleet import Fleet

SECRET = "s3cr3t-t0ken-value"


@pytest.fixture
def plain_factory():
    """The process's record factory, reset to logging's own for the test, then restored."""
    saved = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        yield
    finally:
        logging.setLogRecordFactory(saved)


def _logged(caplog: pytest.LogCaptureFixture, *args: object) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logging.getLogger("test.redaction").info(*args)
    return caplog.records[-1].getMessage()


async def test_a_websocket_server_started_alone_leaves_logging_alone(plain_factory):
    """Servers have no global side effect: the composition root installs the redaction."""
    config = parse_config(
        {
            "websocket": {"host": "127.0.0.1", "port": 0},
            "machines": [{"id": "m", "name": "M", "host": "127.0.0.1", "port": 9}],
        }
    )
    api = WebSocketApi(config, Fleet(config.machines))  # the fleet is never started
    await api.start()
    try:
        assert logging.getLogRecordFactory() is logging.LogRecord
    finally:
        await api.stop()


def test_tokens_in_a_request_target_are_redacted_once_installed(plain_factory, caplog):
    target = f"/v1/machines?x=1&token={SECRET}&y=2"
    assert SECRET in _logged(caplog, '"GET %s HTTP/1.1" 200', target)
    assert install_log_redaction() is True
    message = _logged(caplog, '"GET %s HTTP/1.1" 200', target)
    assert SECRET not in message
    assert f"token={REDACTED}&y=2" in message
    header = _logged(caplog, "> Authorization: Bearer %s", SECRET)
    assert SECRET not in header and REDACTED in header


def test_installing_twice_wraps_the_factory_once(plain_factory, caplog):
    assert install_log_redaction() is True
    factory = logging.getLogRecordFactory()
    assert install_log_redaction() is False
    assert logging.getLogRecordFactory() is factory
    assert _logged(caplog, "GET /?token=%s", SECRET) == f"GET /?token={REDACTED}"
