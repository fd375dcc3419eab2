"""TLS to the broker (a CA of our own) and a username whose password comes from the
environment variable named in the config: a real mosquitto that demands both."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from carousel_gateway.api.mqtt.codec import decode_payload
from carousel_gateway.api.mqtt.link import tls_context
from carousel_gateway.api.mqtt.status import MqttLinkState
from carousel_gateway.config import MqttConfig
from tests.integration.conftest import gateway_config
from tests.integration.test_security import certificate
from tests.mqtt.conftest import Broker, free_port, mqtt_settings

__all__ = ["certificate"]  # the fixture, shared with test_security

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def secure_broker(tmp_path, certificate):
    cert, key = certificate
    passwords = tmp_path / "passwords"
    made = await asyncio.create_subprocess_exec(
        "mosquitto_passwd", "-b", "-c", str(passwords), "gateway", "s3cret"
    )
    assert await made.wait() == 0
    passwords.chmod(0o600)
    broker = Broker(
        tmp_path,
        free_port(),
        extra=(
            f"cafile {cert}\ncertfile {cert}\nkeyfile {key}\n"
            f"allow_anonymous false\npassword_file {passwords}"
        ),
    )
    await broker.start()
    yield broker, cert
    await broker.stop()


async def test_tls_with_a_password_from_the_environment(
    secure_broker, gateway_factory, monkeypatch
):
    broker, cert = secure_broker
    monkeypatch.setenv("TEST_MQTT_PASSWORD", "s3cret")
    settings = mqtt_settings(
        broker, ca=str(cert), username="gateway", password_env="TEST_MQTT_PASSWORD"
    )
    # An observer of our own on the same TLS listener, subscribed before the gateway starts.
    observer_tls = tls_context(MqttConfig(ca=str(cert)))
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username="gateway",
        password="s3cret",
        tls_context=observer_tls,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as observer:
        await observer.subscribe("spBv1.0/site/NBIRTH/cell_a", 1)
        gateway = await gateway_factory(gateway_config(1, mqtt=settings))
        async with asyncio.timeout(15):
            message = await anext(aiter(observer.messages))
        assert isinstance(message.payload, bytes)
        metrics = {m.name: m.value for m in decode_payload(message.payload).metrics}
        assert metrics["bdSeq"] == gateway.mqtt.status.bd_seq
        assert gateway.mqtt.status.state is MqttLinkState.ONLINE


async def test_a_wrong_password_is_named_and_retried(secure_broker, gateway_factory, monkeypatch):
    broker, cert = secure_broker
    monkeypatch.setenv("TEST_MQTT_PASSWORD", "wrong")
    settings = mqtt_settings(
        broker, ca=str(cert), username="gateway", password_env="TEST_MQTT_PASSWORD"
    )
    gateway = await gateway_factory(gateway_config(1, mqtt=settings))
    async with asyncio.timeout(15):
        await gateway.mqtt.wait_until(lambda s: s.last_error is not None)
    assert "authoriz" in gateway.mqtt.status.last_error.lower()
    assert gateway.mqtt.status.state is MqttLinkState.CONNECTING
