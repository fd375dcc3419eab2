"""The only code touching asyncua's internals (checked by tests/unit/test_opcua_internals.py).

asyncua 2.1 has no setting for two things the gateway needs:

- a minimum publishing interval: its subscription service grants whatever a client asks,
  so ``create_subscription`` is wrapped to raise a faster request to the minimum;
- the real address of a server bound to port 0 (tests, benchmarks): its endpoints keep the
  configured URL, so they are rewritten once the socket is bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Server, ua

__all__ = ["VERIFIED_VERSIONS", "bound_port", "clamp_publishing_interval", "set_endpoint_urls"]

#: asyncua releases these hooks were checked against.
VERIFIED_VERSIONS = ("2.1.0",)


def clamp_publishing_interval(server: Server, minimum_ms: float) -> None:
    """Grant no subscription a publishing interval under ``minimum_ms``."""
    service = server.iserver.subscription_service
    original: Callable[..., Awaitable[ua.CreateSubscriptionResult]] = service.create_subscription

    async def create_subscription(
        params: ua.CreateSubscriptionParameters, *args: Any, **kwargs: Any
    ) -> ua.CreateSubscriptionResult:
        requested = params.RequestedPublishingInterval
        if not requested or requested < minimum_ms:
            params.RequestedPublishingInterval = minimum_ms
        return await original(params, *args, **kwargs)

    service.create_subscription = create_subscription


def bound_port(server: Server) -> int:
    """The port the server's socket is bound to (after ``start``)."""
    assert server.bserver is not None, "the OPC UA server is not started"
    port = server.bserver.port
    assert port is not None
    return int(port)


def set_endpoint_urls(server: Server, url: str) -> None:
    """Advertise ``url`` in every endpoint (after binding port 0)."""
    for endpoint in server.iserver.endpoints:
        endpoint.EndpointUrl = url
        endpoint.Server.DiscoveryUrls = [url]
