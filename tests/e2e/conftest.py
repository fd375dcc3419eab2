"""Browser tests reuse the integration fixtures (a real gateway on loopback)."""

from tests.integration.conftest import gateway_factory  # noqa: F401
