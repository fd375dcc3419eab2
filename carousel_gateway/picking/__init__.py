"""Pick jobs: goods-to-person picking on the carousels (docs/picking.md).

A WMS submits jobs to a workstation; the workstation plans the shortest route over each
carousel's buckets, moves its carousels through the one command path (origin
``job:<job_id>``), presents each stop to the operator and waits for every line's
confirmation before that carousel moves on. Pure parts (the route planner, job and
workstation state) are apart from the asyncio engine that drives the machines.
"""

from __future__ import annotations

__all__: list[str] = []
