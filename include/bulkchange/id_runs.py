"""A batch's device change ids as runs of consecutive ids, for the XCom between ``prepare`` and the
``process_batch`` tasks.

A portal inserts a bulk change's device changes together, so their ids are consecutive and a batch
of 5,000 is one run ``[first, last]``: the mapped tasks' XCom stays a few bytes per batch however
large the bulk change (100,000 ids would be about 1 MB of JSON in the metadata DB, read by every
batch task and by the grid). Lossless for any ids: gaps just make more runs, and the order is kept.
"""
from __future__ import annotations

from typing import Iterable, Sequence


def id_runs(ids: Iterable[int]) -> list[list[int]]:
    """``[[first, last], ...]``: each run of ids that follow one another by +1, in the given order."""
    runs: list[list[int]] = []
    for i in ids:
        i = int(i)
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def ids_of_runs(runs: Sequence[Sequence[int]]) -> list[int]:
    """The ids ``id_runs`` was given, in order."""
    out: list[int] = []
    for first, last in runs:
        first, last = int(first), int(last)
        if last < first:
            raise ValueError(f"an id run ends before it starts: [{first}, {last}]")
        out.extend(range(first, last + 1))
    return out
