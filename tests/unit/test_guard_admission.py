"""Guard.admit and Guard.authenticate: the one admission both APIs use (the WebSocket
handshake and REST's gatekeeper), judged without sockets on an injected clock."""

from __future__ import annotations

import hashlib

import pytest

from carousel_gateway.api.auth import Authenticator
from carousel_gateway.api.guard import Guard, HostPolicy
from carousel_gateway.config import AuthConfig, LimitsConfig, SecurityConfig, TokenConfig
from carousel_gateway.errors import ErrorCode, GatewayError

TOKEN = "s3cret-operator-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: Clock, **limits: object) -> Guard:
    return Guard(
        LimitsConfig(**limits),
        SecurityConfig(allowed_origins=["http://wms.example:8080"]),
        hosts=HostPolicy(names=["gateway.local"], addresses=frozenset),
        clock=clock,
    )


def tokens() -> Authenticator:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return Authenticator(
        AuthConfig(tokens=(TokenConfig(name="wms", role="operator", sha256=digest),))
    )


def code_of(call) -> ErrorCode:
    with pytest.raises(GatewayError) as refused:
        call()
    return refused.value.code


def test_admit_judges_the_host_before_the_origin():
    g = guard(Clock())
    g.admit("http", host="gateway.local", origin=None)
    g.admit("http", host="gateway.local", origin="http://wms.example:8080")
    assert code_of(lambda: g.admit("http", host="evil.example", origin=None)) is (
        ErrorCode.HOST_NOT_ALLOWED
    )
    # Both wrong: the Host is what is reported.
    assert code_of(lambda: g.admit("http", host="evil.example", origin="http://x.example")) is (
        ErrorCode.HOST_NOT_ALLOWED
    )
    assert code_of(lambda: g.admit("http", host="gateway.local", origin="http://x.example")) is (
        ErrorCode.ORIGIN_NOT_ALLOWED
    )


def test_an_open_gateway_lets_everyone_in_as_operator():
    g = guard(Clock())
    identity = g.authenticate("ws", Authenticator(AuthConfig()), None, address="10.0.0.9", peer="p")
    assert identity.role == "operator" and identity.client == "p"


def test_a_right_token_names_its_holder():
    g = guard(Clock())
    identity = g.authenticate("ws", tokens(), TOKEN, address="10.0.0.9", peer="10.0.0.9:5000")
    assert identity.client == "wms" and identity.can_command


def test_wrong_tokens_lock_the_address_out_before_any_token_is_looked_at():
    clock = Clock()
    g = guard(clock, auth_failures=3, auth_failure_window_s=60, lockout_s=30)
    auth = tokens()
    for _ in range(3):
        code = code_of(lambda: g.authenticate("http", auth, "wrong", address="10.0.0.9", peer="p"))
        assert code is ErrorCode.UNAUTHORIZED
    # Locked out: even the right token is refused, and says when to try again.
    with pytest.raises(GatewayError) as locked:
        g.authenticate("ws", auth, TOKEN, address="10.0.0.9", peer="p")
    assert locked.value.code is ErrorCode.AUTH_LOCKED_OUT
    assert locked.value.retry_after_s is not None and locked.value.retry_after_s > 0
    # Another address is not affected; the lockout passes with time.
    g.authenticate("ws", auth, TOKEN, address="10.0.0.10", peer="q")
    clock.now += 31
    assert g.authenticate("ws", auth, TOKEN, address="10.0.0.9", peer="p").client == "wms"


def test_a_missing_token_does_not_count_toward_the_lockout_and_a_right_one_clears_it():
    clock = Clock()
    g = guard(clock, auth_failures=2, auth_failure_window_s=60, lockout_s=30)
    auth = tokens()
    for _ in range(5):  # a browser without a token yet: refused, never locked out
        code = code_of(lambda: g.authenticate("http", auth, None, address="10.0.0.9", peer="p"))
        assert code is ErrorCode.UNAUTHORIZED
    code_of(lambda: g.authenticate("http", auth, "wrong", address="10.0.0.9", peer="p"))
    g.authenticate("http", auth, TOKEN, address="10.0.0.9", peer="p")  # clears the count
    code_of(lambda: g.authenticate("http", auth, "wrong", address="10.0.0.9", peer="p"))
    assert g.authenticate("http", auth, TOKEN, address="10.0.0.9", peer="p").client == "wms"
