"""Token authentication shared by the WebSocket and HTTP servers.

Tokens live in the config only as SHA-256 digests. A presented token is hashed and compared
with every configured digest in constant time, so neither timing nor logs reveal it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from carousel_gateway.config import AuthConfig

Role = Literal["viewer", "operator"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on the other end: a token name (auth on) or a peer address (auth off)."""

    client: str
    role: Role

    @property
    def can_command(self) -> bool:
        return self.role == "operator"


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self._tokens = [(bytes.fromhex(t.sha256), t.name, t.role) for t in config.tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def identify(self, token: str | None, peer: str) -> Identity | None:
        """The identity for a presented token, or None when it is missing or wrong."""
        if not self.enabled:
            return Identity(client=peer, role="operator")
        if not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: Identity | None = None
        for expected, name, role in self._tokens:
            # Compare against every token (no early exit) to keep the timing flat.
            if hmac.compare_digest(digest, expected):
                found = Identity(client=name, role=role)
        return found


def token_from(authorization: str | None, target: str | None) -> str | None:
    """A token from ``Authorization: Bearer X`` or, for browsers, ``?token=X``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if target and "token=" in target:
        values = parse_qs(urlsplit(target).query).get("token")
        if values:
            return values[0]
    return None
