"""Two gateways per cell (active/standby): the lease that decides which one drives the
carousels, kept in PostgreSQL and fenced there (only the database's clock decides expiry).

The lease's arithmetic (pure, :mod:`.lease`), its SQL (:mod:`.lease_store`), and the
coordinator that runs it for a gateway (:mod:`.coordinator`, wired in ``app.py``).
"""

from __future__ import annotations

__all__: list[str] = []
