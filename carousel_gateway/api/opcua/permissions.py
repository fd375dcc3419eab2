"""Who may do what over OPC UA: the permission ruleset of the gateway's roles.

Viewers browse, read and subscribe; operators may also call methods (``MoveTo``). Nobody
writes attributes or changes the address space (every variable is read-only; a command is a
method call, through the one command path). The decision (:func:`allowed`) is pure; the
ruleset hands it to asyncua, which asks it for every request of an activated session.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import PermissionRuleset, User

from carousel_gateway.api.auth import Role

__all__ = [
    "CALLER",
    "READ_SERVICES",
    "GatewayRuleset",
    "GatewayUser",
    "allowed",
    "service_of",
]

_O = ua.ObjectIds

#: Services of a session that only looks: browse, read, subscribe, close.
READ_SERVICES: frozenset[int] = frozenset(
    {
        _O.CreateSessionRequest_Encoding_DefaultBinary,
        _O.ActivateSessionRequest_Encoding_DefaultBinary,
        _O.CloseSessionRequest_Encoding_DefaultBinary,
        _O.CloseSecureChannelRequest_Encoding_DefaultBinary,
        _O.GetEndpointsRequest_Encoding_DefaultBinary,
        _O.FindServersRequest_Encoding_DefaultBinary,
        _O.ReadRequest_Encoding_DefaultBinary,
        _O.BrowseRequest_Encoding_DefaultBinary,
        _O.BrowseNextRequest_Encoding_DefaultBinary,
        _O.TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary,
        _O.RegisterNodesRequest_Encoding_DefaultBinary,
        _O.UnregisterNodesRequest_Encoding_DefaultBinary,
        _O.CreateSubscriptionRequest_Encoding_DefaultBinary,
        _O.ModifySubscriptionRequest_Encoding_DefaultBinary,
        _O.DeleteSubscriptionsRequest_Encoding_DefaultBinary,
        _O.TransferSubscriptionsRequest_Encoding_DefaultBinary,
        _O.SetPublishingModeRequest_Encoding_DefaultBinary,
        _O.CreateMonitoredItemsRequest_Encoding_DefaultBinary,
        _O.ModifyMonitoredItemsRequest_Encoding_DefaultBinary,
        _O.DeleteMonitoredItemsRequest_Encoding_DefaultBinary,
        _O.SetMonitoringModeRequest_Encoding_DefaultBinary,
        _O.PublishRequest_Encoding_DefaultBinary,
        _O.RepublishRequest_Encoding_DefaultBinary,
    }
)
CALL_SERVICE = _O.CallRequest_Encoding_DefaultBinary


@dataclass
class GatewayUser(User):  # type: ignore[misc]  # asyncua is untyped here (pyproject)
    """An asyncua user with the gateway's role (``User`` keeps asyncua's own role)."""

    gateway_role: Role = "viewer"


#: The user of the request being served: set by the ruleset as it admits a request, read by
#: ``MoveTo`` (asyncua hands a method only its object). One task serves one connection's
#: requests in order, so the value belongs to the request in hand.
CALLER: contextvars.ContextVar[GatewayUser | None] = contextvars.ContextVar(
    "opcua_caller", default=None
)


def service_of(type_id: Any) -> int | None:
    """The numeric id of a request's type NodeId (None for anything else)."""
    identifier = getattr(type_id, "Identifier", None)
    namespace = getattr(type_id, "NamespaceIndex", None)
    return identifier if namespace == 0 and isinstance(identifier, int) else None


def allowed(role: Role | None, service: int | None) -> bool:
    """May a session of ``role`` (None: not logged in) use ``service``?"""
    if role is None or service is None:
        return False
    if service in READ_SERVICES:
        return True
    return service == CALL_SERVICE and role == "operator"


class GatewayRuleset(PermissionRuleset):  # type: ignore[misc]
    """asyncua's hook for :func:`allowed`; records the caller for the method it may call."""

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        role = user.gateway_role if isinstance(user, GatewayUser) else None
        ok = allowed(role, service_of(action_type_id))
        CALLER.set(user if ok and isinstance(user, GatewayUser) else None)
        return ok
