"""plan_memory: give every activation buffer an offset in one arena.

Each buffer is live from the step that writes it to the last step that reads it (graph
inputs from the start, outputs to the end). Buffers whose live ranges overlap must not
share bytes. We place buffers greedily by size, largest first, each at the lowest offset
that fits between the already placed buffers it conflicts with ("greedy by size", as in
TFLite's planner): large buffers dominate the arena, and placing them first leaves gaps
that small buffers fill. Offsets in one arena beat reusing whole buffers by size class.
With the pass disabled every buffer gets its own bytes (the naive plan).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from runtime.program import ALIGN

from . import register_lowering_pass

register_lowering_pass("plan_memory", "pack activation buffers into one arena by live range",
                       provides=("memory_plan",))


@dataclass(frozen=True)
class Interval:
    """A buffer of ``size`` bytes live over steps [start, end] inclusive."""
    name: str
    size: int
    start: int
    end: int

    def overlaps(self, other: "Interval") -> bool:
        return self.start <= other.end and other.start <= self.end


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_naive(intervals: Sequence[Interval]) -> dict[str, int]:
    """One region per buffer, back to back."""
    offsets, top = {}, 0
    for iv in intervals:
        offsets[iv.name] = top
        top += _aligned(iv.size)
    return offsets


def plan_greedy_by_size(intervals: Sequence[Interval]) -> dict[str, int]:
    """Largest first, each at the lowest aligned offset free of live-overlapping buffers."""
    placed: list[tuple[int, int, Interval]] = []  # (offset, aligned size, interval)
    offsets: dict[str, int] = {}
    order = sorted(intervals, key=lambda iv: (-iv.size, iv.start, iv.name))
    for iv in order:
        size = _aligned(iv.size)
        conflicts = sorted((off, sz) for off, sz, other in placed if other.overlaps(iv))
        best = 0
        for off, sz in conflicts:
            if best + size <= off:
                break
            best = max(best, off + sz)
        offsets[iv.name] = best
        placed.append((best, size, iv))
    return offsets


def arena_size(intervals: Sequence[Interval], offsets: dict[str, int]) -> int:
    return max((offsets[iv.name] + _aligned(iv.size) for iv in intervals), default=0)


def lower_bound(intervals: Sequence[Interval]) -> int:
    """The largest total size of buffers live at one step (no plan can use less)."""
    if not intervals:
        return 0
    steps = sorted({iv.start for iv in intervals} | {iv.end for iv in intervals})
    return max(sum(_aligned(iv.size) for iv in intervals if iv.start <= t <= iv.end)
               for t in steps)


def check_plan(intervals: Sequence[Interval], offsets: dict[str, int]) -> None:
    """Raise if two buffers that are live at the same time share a byte."""
    ivs = sorted(intervals, key=lambda iv: offsets[iv.name])
    for i, a in enumerate(ivs):
        a0, a1 = offsets[a.name], offsets[a.name] + a.size
        for b in ivs[i + 1:]:
            b0 = offsets[b.name]
            if b0 >= a1:
                break
            if a.overlaps(b) and a.size and b.size:
                raise AssertionError(f"memory plan overlap: {a.name} [{a0}, {a1}) and "
                                     f"{b.name} [{b0}, {b0 + b.size}) are live together")
