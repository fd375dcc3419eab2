"""The route over one carousel's buckets: the order that turns the chain the least (pure).

A carousel turns the shorter way to a requested bucket, so a leg costs the circular
distance between two buckets. The buckets an optimal route has visited at any moment form
one arc containing the start (passing a bucket on the way costs nothing, so a route that
skips one it passes is never better), so the exact shortest order is a dynamic program over
arcs: how many buckets are taken clockwise, how many counter-clockwise, and at which end the
chain stands. ``tests/unit/test_picking_planner.py`` compares it with brute force on every
instance up to 9 stops. Buckets are any integers read modulo ``positions`` (the API's
numbering works as is: only differences count).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

__all__ = [
    "distance",
    "fifo_route",
    "nearest_next_route",
    "optimal_route",
    "route_cost",
]


def distance(a: int, b: int, positions: int) -> int:
    """Buckets the chain passes from ``a`` to ``b`` turning the shorter way."""
    forward = (b - a) % positions
    return min(forward, positions - forward)


def route_cost(start: int, order: Sequence[int], positions: int) -> int:
    """Buckets travelled visiting ``order`` from ``start``."""
    total, here = 0, start
    for bucket in order:
        total += distance(here, bucket, positions)
        here = bucket
    return total


def _unique(buckets: Iterable[int], positions: int) -> list[int]:
    seen: dict[int, int] = {}
    for bucket in buckets:
        seen.setdefault(bucket % positions, bucket)
    return list(seen.values())


def optimal_route(start: int, buckets: Iterable[int], positions: int) -> list[int]:
    """Every bucket once (duplicates merged, the start's own bucket first), in the order of
    least travel from ``start``."""
    if positions < 1:
        raise ValueError("positions must be >= 1")
    unique = _unique(buckets, positions)
    return list(_optimal(start % positions, tuple(unique), positions))


@lru_cache(maxsize=4096)
def _optimal(start: int, unique: tuple[int, ...], positions: int) -> tuple[int, ...]:
    here = [b for b in unique if b % positions == start]
    # Clockwise offsets from the start, ascending: the i-th bucket clockwise is cw[i], the
    # i-th counter-clockwise is cw[m - 1 - i].
    others = sorted(
        (b for b in unique if b % positions != start), key=lambda b: (b - start) % positions
    )
    m = len(others)
    if m == 0:
        return tuple(here)
    offset = [(b - start) % positions for b in others]

    def leg(a: int, b: int) -> int:  # offsets (0 = the start)
        forward = (b - a) % positions
        return min(forward, positions - forward)

    inf = 1 << 60
    # cost[l][r][end]: least travel having visited the first l clockwise and the first r
    # counter-clockwise buckets (l + r <= m), standing at the clockwise end (0) or the
    # counter-clockwise end (1). Choices remember the previous state for the way back.
    cost = [[[inf, inf] for _ in range(m + 1)] for _ in range(m + 1)]
    came: dict[tuple[int, int, int], tuple[int, int, int]] = {}
    cost[0][0][0] = cost[0][0][1] = 0

    def position_of(l_taken: int, r_taken: int, end: int) -> int:
        if end == 0:
            return offset[l_taken - 1] if l_taken else 0
        return offset[m - r_taken] if r_taken else 0

    for total in range(m):
        for l_taken in range(total + 1):
            r_taken = total - l_taken
            for end in (0, 1):
                here_cost = cost[l_taken][r_taken][end]
                if here_cost >= inf:
                    continue
                at = position_of(l_taken, r_taken, end)
                # Take the next clockwise bucket ...
                step = here_cost + leg(at, offset[l_taken])
                if step < cost[l_taken + 1][r_taken][0]:
                    cost[l_taken + 1][r_taken][0] = step
                    came[(l_taken + 1, r_taken, 0)] = (l_taken, r_taken, end)
                # ... or the next counter-clockwise one.
                step = here_cost + leg(at, offset[m - 1 - r_taken])
                if step < cost[l_taken][r_taken + 1][1]:
                    cost[l_taken][r_taken + 1][1] = step
                    came[(l_taken, r_taken + 1, 1)] = (l_taken, r_taken, end)
    best: tuple[int, int, int] | None = None
    best_cost = inf
    for l_taken in range(m + 1):
        for end in (0, 1):
            if cost[l_taken][m - l_taken][end] < best_cost:
                best_cost = cost[l_taken][m - l_taken][end]
                best = (l_taken, m - l_taken, end)
    assert best is not None
    order: list[int] = []
    state = best
    while state[0] + state[1] > 0:
        l_taken, r_taken, end = state
        order.append(others[l_taken - 1] if end == 0 else others[m - r_taken])
        state = came[state]
    order.reverse()
    return (*here, *order)


def nearest_next_route(start: int, buckets: Iterable[int], positions: int) -> list[int]:
    """Greedy: always the closest bucket next (ties: the first given). A baseline."""
    remaining = _unique(buckets, positions)
    order: list[int] = []
    here = start
    while remaining:
        nearest = min(remaining, key=lambda b: distance(here, b, positions))
        remaining.remove(nearest)
        order.append(nearest)
        here = nearest
    return order


def fifo_route(buckets: Iterable[int], positions: int) -> list[int]:
    """The buckets as given (each once, at its first mention). A baseline."""
    return _unique(buckets, positions)
