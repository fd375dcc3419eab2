"""The route planner against brute force: every instance up to 9 stops, exact cost."""

from __future__ import annotations

import itertools
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from carousel_gateway.picking.planner import (
    distance,
    fifo_route,
    nearest_next_route,
    optimal_route,
    route_cost,
)


def brute_force(start: int, buckets: list[int], positions: int) -> int:
    """Least travel over every visiting order (Held-Karp over subsets: exhaustive, exact)."""
    unique = sorted({b % positions for b in buckets})
    n = len(unique)
    if n == 0:
        return 0

    @cache
    def best(visited: int, last: int) -> int:
        if visited == (1 << n) - 1:
            return 0
        return min(
            distance(unique[last], unique[j], positions) + best(visited | (1 << j), j)
            for j in range(n)
            if not visited & (1 << j)
        )

    return min(distance(start, unique[j], positions) + best(1 << j, j) for j in range(n))


def permutations_cost(start: int, buckets: list[int], positions: int) -> int:
    unique = sorted({b % positions for b in buckets})
    return min(
        (route_cost(start, order, positions) for order in itertools.permutations(unique)),
        default=0,
    )


def check(start: int, buckets: list[int], positions: int) -> None:
    order = optimal_route(start, buckets, positions)
    assert sorted(order) == sorted({b % positions for b in buckets})  # each once
    assert route_cost(start, order, positions) == brute_force(start, buckets, positions)
    if start % positions in {b % positions for b in buckets}:
        assert order[0] == start % positions  # the bucket in front of the operator first


@st.composite
def instances(draw: st.DrawFn) -> tuple[int, list[int], int]:
    positions = draw(st.integers(2, 256))
    bucket = st.integers(0, positions - 1)
    start = draw(bucket)
    # Up to 9 stops; duplicates, the start's own bucket and neighbours on purpose.
    near = st.integers(-2, 2).map(lambda d: (start + d) % positions)
    buckets = draw(st.lists(st.one_of(bucket, near, st.just(start)), max_size=12))
    unique: list[int] = []
    for b in buckets:
        if b not in unique and len(unique) < 9:
            unique.append(b)
    return start, [b for b in buckets if b in unique], positions


@settings(max_examples=400, deadline=None)
@given(instances())
def test_optimal_matches_brute_force(instance: tuple[int, list[int], int]) -> None:
    check(*instance)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(2, 12).flatmap(
        lambda n: st.tuples(
            st.integers(0, n - 1),
            st.lists(st.sampled_from([0, n // 2, n // 4, (3 * n) // 4]), max_size=9),
            st.just(n),
        )
    )
)
def test_ties_on_small_even_and_odd_carousels(instance: tuple[int, list[int], int]) -> None:
    """Buckets opposite each other (both ways cost the same) and repeated offsets."""
    check(*instance)


def test_every_subset_of_a_small_carousel_from_every_start() -> None:
    """Exhaustive on 7 buckets, cross-checked against plain permutations."""
    positions = 7
    for start in range(positions):
        for size in range(positions + 1):
            for subset in itertools.combinations(range(positions), size):
                buckets = list(subset)
                order = optimal_route(start, buckets, positions)
                assert route_cost(start, order, positions) == permutations_cost(
                    start, buckets, positions
                )


def test_api_numbering_is_read_modulo_the_carousel() -> None:
    # Buckets 1..30 in the API's numbering: 30 is next to 1.
    assert optimal_route(1, [30, 2], 30) in ([30, 2], [2, 30])
    assert route_cost(1, optimal_route(1, [30, 2], 30), 30) == 3
    assert optimal_route(5, [5, 5, 6], 30) == [5, 6]
    assert optimal_route(5, [], 30) == []


def test_baselines_visit_each_bucket_once() -> None:
    assert fifo_route([3, 9, 3, 1], 30) == [3, 9, 1]
    assert nearest_next_route(0, [10, 2, 28, 2], 30) == [2, 28, 10]  # a tie: first given
    assert distance(1, 29, 30) == 2 and distance(0, 15, 30) == 15
