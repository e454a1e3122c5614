"""The memory planner: never overlaps live buffers; planned vs lower bound vs naive."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncomp.passes.plan_memory import (Interval, arena_size, check_plan, lower_bound,
                                        plan_greedy_by_size, plan_naive)

intervals = st.lists(
    st.tuples(st.integers(1, 10_000), st.integers(-1, 30), st.integers(0, 12)),
    min_size=1, max_size=40,
).map(lambda ts: [Interval(f"b{i}", size, start, start + length)
                  for i, (size, start, length) in enumerate(ts)])


@settings(max_examples=300, deadline=None)
@given(intervals)
def test_greedy_never_overlaps_and_is_bounded(ivs):
    offsets = plan_greedy_by_size(ivs)
    check_plan(ivs, offsets)
    assert all(off % 64 == 0 for off in offsets.values())
    planned = arena_size(ivs, offsets)
    assert lower_bound(ivs) <= planned <= arena_size(ivs, plan_naive(ivs))


def test_check_plan_detects_overlap():
    ivs = [Interval("a", 100, 0, 2), Interval("b", 100, 1, 3)]
    with pytest.raises(AssertionError, match="overlap"):
        check_plan(ivs, {"a": 0, "b": 64})
    check_plan(ivs, {"a": 0, "b": 128})
    # disjoint in time may share bytes
    check_plan([Interval("a", 100, 0, 1), Interval("b", 100, 2, 3)], {"a": 0, "b": 0})


def test_chain_reuses_memory_by_hand():
    # a -> b -> c -> d, each read only by the next: at most two live at once
    ivs = [Interval("a", 640, -1, 0), Interval("b", 640, 0, 1), Interval("c", 640, 1, 2),
           Interval("d", 640, 2, 3)]
    offsets = plan_greedy_by_size(ivs)
    assert arena_size(ivs, offsets) == 1280 == lower_bound(ivs)
    assert arena_size(ivs, plan_naive(ivs)) == 2560
