"""Token authentication shared by the WebSocket and HTTP servers.

Tokens live in the config only as SHA-256 digests. A presented token is hashed and compared
with every configured digest in constant time, so neither timing nor logs reveal it: every
log record is scrubbed of ``token=`` query values and ``Authorization`` header values before
any handler sees it (uvicorn's access log and websockets' debug log print request targets
and headers).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from carousel_gateway.config import AuthConfig

__all__ = [
    "REDACTED",
    "Authenticator",
    "Identity",
    "Role",
    "install_log_redaction",
    "redact",
    "token_from",
]

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


# -- keeping tokens out of logs ----------------------------------------------------------------

REDACTED = "[redacted]"
_SECRETS = (
    # ?token=X / &token=X in a request target (also %-encoded "token" keys are plain ASCII).
    (re.compile(r"(?i)([?&;](?:access_)?token=)[^&\s\"'#]*"), r"\1" + REDACTED),
    # "Authorization: Bearer X", "authorization=Bearer X" (a header dump), "Bearer X".
    (re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?)[^'\"\r\n]*"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bbearer\s+)[^\s'\",]+"), r"\1" + REDACTED),
)


def redact(text: str) -> str:
    """``text`` with token values replaced by ``[redacted]``."""
    if "oken" not in text and "uthorization" not in text and "earer" not in text:
        return text  # the common case: nothing to look at
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    args = record.args
    if isinstance(args, tuple) and args:
        # Keep the arguments' shape (uvicorn's access formatter unpacks them).
        record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
    elif isinstance(args, dict) and args:
        record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
    else:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return
    # With arguments the format string is left alone (redacting "Bearer %s" would eat the
    # placeholder and break the record); the merged text is checked instead.
    try:
        message = record.getMessage()
    except Exception:  # a broken record is the logging module's business, not ours
        return
    cleaned = redact(message)
    if cleaned != message:  # a secret in the format string or split across arguments
        record.msg, record.args = cleaned, None


def install_log_redaction() -> bool:
    """Scrub tokens from every log record this process creates; True if it was not yet.

    Done where records are made (the log record factory), so it covers every logger,
    handler and formatter, including uvicorn's and websockets' own. It changes the process's
    logging, so the composition root (``app.Gateway.start``, ``carousel-gateway serve``)
    installs it, not the servers. Idempotent: a factory that already redacts is kept.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts_tokens", False):
        return False

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory.redacts_tokens = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    return True
