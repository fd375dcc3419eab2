"""Allow ``python -m carousel_gateway``."""

from carousel_gateway.cli import main

main()
