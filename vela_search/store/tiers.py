"""Tiered merging: which of the newest shards (or table deltas) a commit merges, so their number stays small.

Each commit appends a shard. Left alone, a long or interrupted run would leave one shard per commit (a
million files committed every 256 segments are ~4,000 shards). As log-structured stores do, items of
similar size are merged as they land: an item's *tier* is ``floor(log_fanout(size))``, and once `fanout`
items of one tier sit at the tail of the list (led by one of them, with only smaller ones between
them), that tail is merged into one item of a higher tier. Merging only a tail keeps the
list in id order and each row is rewritten about ``log_fanout(max_size / commit size)`` times, so the
number of items grows like ``log(N)``: at most about ``2 * (fanout - 1)`` per tier, plus the full ones.

Items of `max_size` rows or more are full: they stay put. A merge whose rows exceed `max_size` is split
into full items and a remainder (the writer's shard size limit), so no merge outgrows it.

The functions here are pure (sizes in, a decision out): the writer does the reading and writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_FANOUT = 4
# Below this many items nothing is merged: a handful of small shards costs a reader nothing worth
# rewriting them for (and keeps a short run's shards as its commits made them).
DEFAULT_MIN_ITEMS = 8


@dataclass(frozen=True)
class TierPolicy:
    """How eagerly items are merged.

    Attributes:
        fanout: items of one tier that trigger a merge into the next (at least 2).
        min_items: merge nothing while the list holds at most this many items.
    """

    fanout: int = DEFAULT_FANOUT
    min_items: int = DEFAULT_MIN_ITEMS

    def __post_init__(self) -> None:
        if self.fanout < 2:
            raise ValueError(f"fanout must be at least 2, not {self.fanout}")
        if self.min_items < 0:
            raise ValueError(f"min_items must be at least 0, not {self.min_items}")


def tier(size: int, fanout: int = DEFAULT_FANOUT) -> int:
    """The tier of an item of `size` rows: ``floor(log_fanout(size))``, 0 for sizes below `fanout`."""
    level, bound = 0, fanout
    while size >= bound:
        level, bound = level + 1, bound * fanout
    return level


def _tail_to_merge(sizes: list[int], max_size: int, fanout: int) -> int | None:
    """Start of the longest tail that holds `fanout` items of its largest tier, led by one; or None.

    The longest, so that smaller items left behind an earlier merge join the next one of their tier.
    """
    counts: dict[int, int] = {}
    highest, found = -1, None
    for i in range(len(sizes) - 1, -1, -1):
        if sizes[i] >= max_size:
            break  # a full item ends the mergeable tail
        level = tier(sizes[i], fanout)
        counts[level] = counts.get(level, 0) + 1
        highest = max(highest, level)
        if level == highest and counts[level] >= fanout:
            found = i
    return found


def merge_start(sizes: Sequence[int], *, max_size: int, policy: TierPolicy = TierPolicy()) -> int | None:
    """Where the tail that a commit should merge begins, or None when nothing is to be merged.

    Merges cascade: when a merged item completes a tier above, the merge extends over that tier too, so
    the answer is one tail ``sizes[start:]`` whose rows become one item (split at `max_size`).

    Args:
        sizes: row counts of the items, oldest first (the newest, just landed, last).
        max_size: rows of a full item (never merged, never exceeded).
        policy: fanout and the item count below which nothing is merged.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {max_size}")
    if len(sizes) <= policy.min_items:
        return None
    # Simulate the cascade on sizes: each step merges a tail of the current list.
    items = [(i, int(s)) for i, s in enumerate(sizes)]  # (first original index, rows)
    start = None
    while True:
        at = _tail_to_merge([s for _, s in items], max_size, policy.fanout)
        if at is None:
            return start
        first = items[at][0]
        # Everything of the tail's original range goes, including full pieces split off an earlier step.
        while at > 0 and items[at - 1][0] >= first:
            at -= 1
        total = sum(s for _, s in items[at:])
        full, rest = divmod(total, max_size)
        items = items[:at] + [(first, max_size)] * full + ([(first, rest)] if rest else [])
        start = first
