"""Two gateways per cell (active/standby): the lease that decides which one drives the
carousels, kept in PostgreSQL and fenced there (only the database's clock decides expiry).

Groundwork of the failover work: the lease's arithmetic (pure, :mod:`.lease`) and its SQL
(:mod:`.lease_store`). Nothing in the gateway takes a lease yet.
"""

from __future__ import annotations

__all__: list[str] = []
