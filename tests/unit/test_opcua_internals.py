"""Loud tests of the asyncua internals api/opcua/asyncua_internals.py touches: a new
asyncua release that moves them fails here, not in a plant."""

from __future__ import annotations

from importlib.metadata import version

from asyncua import Server, ua

from carousel_gateway.api.opcua.asyncua_internals import (
    VERIFIED_VERSIONS,
    clamp_publishing_interval,
    set_endpoint_urls,
)


def test_installed_asyncua_is_a_verified_one() -> None:
    assert version("asyncua") in VERIFIED_VERSIONS


async def test_publishing_interval_is_raised_to_the_minimum() -> None:
    server = Server()
    await server.init()
    clamp_publishing_interval(server, 250.0)
    service = server.iserver.subscription_service
    for requested, granted in ((10.0, 250.0), (0.0, 250.0), (1000.0, 1000.0)):
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = requested
        result = await service.create_subscription(params, lambda *_: None, ua.NodeId(1, 0))
        assert result.RevisedPublishingInterval == granted
        await service.delete_subscriptions([result.SubscriptionId])


async def test_endpoint_urls_are_rewritten() -> None:
    server = Server()
    await server.init()
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    await server._setup_server_nodes()  # what start() does before it binds
    set_endpoint_urls(server, "opc.tcp://127.0.0.1:5555/")
    endpoints = await server.get_endpoints()
    assert endpoints and all(e.EndpointUrl == "opc.tcp://127.0.0.1:5555/" for e in endpoints)
    assert all(e.Server.DiscoveryUrls == ["opc.tcp://127.0.0.1:5555/"] for e in endpoints)
