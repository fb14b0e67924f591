"""An epoch's batches as arrays: the length order, where it is cut, and the batch order.

:class:`translate.data.batching.BatchSampler` used to keep every batch of an epoch as a list of
Python ints (tens of bytes a pair, and per-row Python work to sort and cut). At millions of
pairs that was the training process's one structure growing with the corpus besides the
lengths themselves, so the plan is now three numpy arrays and a batch becomes a list of
ints only when it is asked for. The rules are unchanged, and this module keeps them exact:

- **order**: rows sorted by ``cost = max(src_len, tgt_len)``, then target, then source
  length (all descending for ``longest_first``); equal lengths are ordered by a tie-break
  key (a random draw per epoch when shuffling, else the row position). The sort is done as
  two stable sorts (by the tie-break, then by a small integer code of the lengths, which
  numpy sorts by radix) rather than one ``np.lexsort`` over four keys: same result, fewer
  passes over the data.
- **cut** (``"tokens"``): a greedy left-to-right fill, a row joining the current batch while
  ``(rows + 1) * max width`` stays within ``max_tokens`` and the batch holds fewer than
  ``cap`` rows; a row alone over the budget gets a batch of its own. Because the order is
  sorted by cost, the batch's width is its last row's cost (ascending) or its first row's
  (descending), so the cut points follow from the runs of equal cost without visiting rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

_GRID_MAX = 1 << 18  # (target, source) length cells ranked with a table; more: np.lexsort


class EpochPlan(Sequence[list[int]]):
    """The batches of one epoch; ``plan[k]`` is the k-th batch served, a list of row indices.

    ``rows``: the epoch's row indices in length order (int32 while the split allows); batch
    ``j`` of that order is ``rows[bounds[j]:bounds[j + 1]]``; ``order[k]`` is the batch
    served k-th. A slice gives a list of batches (a step's group of micro-batches).
    """

    __hash__ = None  # type: ignore[assignment]  # compared by value, like the lists it replaces

    def __init__(self, rows: np.ndarray, bounds: np.ndarray, order: np.ndarray | None = None):
        self.rows = rows
        self.bounds = bounds
        self.order = np.arange(len(bounds) - 1) if order is None else order
        for arr in (self.rows, self.bounds, self.order):
            arr.flags.writeable = False  # shared by every caller of the sampler's cache

    def __len__(self) -> int:
        return len(self.order)

    def _batch(self, j: int) -> list[int]:
        return self.rows[self.bounds[j]:self.bounds[j + 1]].tolist()

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._batch(j) for j in self.order[index].tolist()]
        return self._batch(int(self.order[index]))

    def __iter__(self) -> Iterator[list[int]]:
        for j in self.order.tolist():
            yield self._batch(j)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EpochPlan):
            other = other.tolist()
        if not isinstance(other, Sequence):
            return NotImplemented
        return self.tolist() == [list(b) for b in other]

    def tolist(self) -> list[list[int]]:
        """Every batch as a list (small splits and tests; a large epoch should be iterated)."""
        return list(self)

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.bounds.nbytes + self.order.nbytes


def index_dtype(n: int) -> np.dtype:
    """The smallest signed type that indexes ``n`` rows (int32 below 2**31)."""
    return np.dtype(np.int32 if n < 2**31 else np.int64)


def length_order(src: np.ndarray, tgt: np.ndarray, tie: np.ndarray | None,
                 descending: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions sorted by (cost, target, source length), equal lengths by ``tie`` then by
    position; everything but ``tie`` reversed when ``descending``. The order equals
    ``np.lexsort((tie, sign * src, sign * tgt, sign * cost))``; it comes with the runs of
    equal cost along it (cost of each run, its length), which is all the cut needs."""
    n = len(src)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    width = int(max(src.max(), tgt.max())) + 1
    if width * width > _GRID_MAX or min(int(src.min()), int(tgt.min())) < 0:
        sign = -1 if descending else 1
        src64, tgt64 = src.astype(np.int64), tgt.astype(np.int64)
        keys = (sign * src64, sign * tgt64, sign * np.maximum(src64, tgt64))
        order = np.lexsort(keys if tie is None else (tie, *keys))
        cost = np.maximum(src64[order], tgt64[order])
        cut = np.flatnonzero(np.diff(cost)) + 1
        return order, cost[np.append(0, cut)], np.diff(np.append(np.append(0, cut), n))
    code, code_cost = _length_codes(src, tgt, width, descending)
    # Stable by code after the tie-break (lexsort sorts by its last key first): the code
    # is a uint16 in practice, sorted by radix.
    order = np.argsort(code, kind="stable") if tie is None else np.lexsort((tie, code))
    return order, code_cost, np.bincount(code, minlength=len(code_cost))


def _length_codes(src: np.ndarray, tgt: np.ndarray, width: int,
                  descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each row's rank among the (cost, target, source) lengths present, a small integer
    (uint16 when under 65536 distinct), and the cost of each rank."""
    cells = width * width
    t, s = np.divmod(np.arange(cells, dtype=np.int64), width)
    key = (np.maximum(t, s) * width + t) * width + s
    by_rank = np.argsort(-key if descending else key)
    rank = np.empty(cells, np.int32)
    rank[by_rank] = np.arange(cells, dtype=np.int32)
    cell_rank = rank[tgt.astype(np.int32) * width + src]
    used = np.zeros(cells, bool)
    used[cell_rank] = True
    dense = np.cumsum(used) - 1
    code = dense.astype(np.uint16 if dense[-1] < 1 << 16 else np.int32)[cell_rank]
    return code, np.maximum(t, s)[by_rank[used]]


def token_bounds(run_cost: np.ndarray, run_len: np.ndarray, max_tokens: int, cap: int,
                 descending: bool = False) -> np.ndarray:
    """Batch boundaries (int64, ``[0, ..., n]``) of rows sorted by cost (ascending, or
    descending), given as runs of equal cost: the greedy fill of the module docstring, one
    Python step per batch."""
    n = int(run_len.sum())
    if n == 0:
        return np.zeros(1, np.int64)
    keep = run_len > 0
    ends = np.cumsum(run_len[keep]).tolist()
    starts = [0, *ends[:-1]]
    room = (max_tokens // run_cost[keep].astype(np.int64)).tolist()  # rows of that width
    bounds, a, g = [0], 0, 0
    while a < n:
        while ends[g] <= a:
            g += 1
        end = min(n, a + cap)
        if descending:  # the first row is the widest
            end = min(end, a + max(1, room[g]))
        else:  # the row where (rows so far + 1) * its cost first exceeds the budget
            h = g
            while h < len(starts) and starts[h] < end:
                over = max(starts[h], a + room[h], a + 1)
                if over < ends[h]:
                    end = min(end, over)
                    break
                h += 1
        bounds.append(end)
        a = end
    return np.asarray(bounds, dtype=np.int64)
