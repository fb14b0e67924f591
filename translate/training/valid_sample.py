"""Which validation rows ``training.valid_max_sentences`` keeps: a sample of every domain.

Validation sets are usually several dev sets listed one after another, one per domain. The
first ``N`` rows of such a split are the first domain alone, so a cap used to drop whole
domains from validation, early stopping and the per-domain scores. :func:`stratified_rows`
instead takes a sample stratified by domain:

- **Groups.** A row's group is its *set* of labels (the sorted tuple of its ``domains``),
  not its first label. A row with several labels (a source given several ``domains``, a
  ``domains_column``) lists them in whatever order they were written, so a first label
  would depend on that order and fold the row into one of its domains; and a label that
  only ever comes second would have no group of its own and could vanish from the sample.
  With the tuple, every label seen in the split is in some group, and every group keeps a
  row while the cap allows. Rows without labels form one group of their own.
- **Sizes.** In proportion to the groups' sizes, with a floor of one row: a group whose
  share is below one row gets one, and the rest of the cap is shared among the others in
  proportion (largest remainders, ties in group order), so the sample holds exactly
  ``cap`` rows and never asks a group for more rows than it has. With fewer cap rows than
  groups, one row of each of the largest groups (ties by labels) as far as the cap goes.
- **Rows.** Drawn without replacement from a generator seeded with ``seed`` alone (a
  constant by default, :data:`SEED`: runs with different training seeds, and a resumed
  run, score the very same rows), and returned in the split's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np

from translate.data.schema import columns

SEED = 20_260  # the validation sample's seed: the same rows whatever training.seed is
NO_LABEL = "(no label)"

Key = tuple[str, ...]


class ValidSample:
    """The rows of a capped validation split (sorted indices) and how they were drawn."""

    def __init__(self, rows: np.ndarray, total: int, cap: int, seed: int,
                 counts: dict[Key, tuple[int, int]]) -> None:
        self.rows = rows  # int64 row numbers of the split, ascending
        self.total = total  # rows in the split
        self.cap = cap
        self.seed = seed
        self.counts = counts  # group -> (rows taken, rows in the split), in group order

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self, what: str = "validation") -> str:
        """One line: how many rows of how many, per domain group, and the seed."""
        parts = ", ".join(f"{group_name(k)} {taken}/{n}" for k, (taken, n) in self.counts.items())
        dropped = sum(1 for taken, _ in self.counts.values() if not taken)
        return (f"{what}: {len(self.rows)} of {self.total} rows (training.valid_max_sentences="
                f"{self.cap}), stratified by domain, seed {self.seed}: {parts}"
                + (f"; {dropped} group(s) left out: the cap is below the number of domain "
                   "groups" if dropped else ""))


def group_name(key: Key) -> str:
    return "+".join(key) if key else NO_LABEL


def _domains(data: datasets.Dataset | Sequence[Sequence[str]]) -> Sequence[Sequence[str]]:
    if isinstance(data, datasets.Dataset):
        return columns(data, "domains")[0]
    return data


def stratified_rows(data: datasets.Dataset | Sequence[Sequence[str]], cap: int,
                    seed: int = SEED) -> ValidSample:
    """At most ``cap`` row numbers of ``data`` (a corpus split with a ``domains`` column,
    or each row's labels), stratified by label set as the module docstring says; every
    row when ``cap`` is 0 or not below the split's size."""
    domains = _domains(data)
    total = len(domains)
    members: dict[Key, list[int]] = {}
    for i, labels in enumerate(domains):
        members.setdefault(tuple(sorted(set(labels or ()))), []).append(i)
    keys = sorted(members)  # group order: by labels, deterministic
    sizes = np.array([len(members[k]) for k in keys], dtype=np.int64)
    if not cap or cap >= total:
        counts = {k: (len(members[k]),) * 2 for k in keys}
        return ValidSample(np.arange(total, dtype=np.int64), total, cap, seed, counts)
    take = _allocate(sizes, cap)
    rng = np.random.default_rng(seed)
    picked = [np.asarray(members[k], dtype=np.int64)[
        np.sort(rng.choice(len(members[k]), size=int(n), replace=False))]
        for k, n in zip(keys, take, strict=True) if n]
    rows = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    counts = {k: (int(n), int(s)) for k, n, s in zip(keys, take, sizes, strict=True)}
    return ValidSample(rows, total, cap, seed, counts)


def _allocate(sizes: np.ndarray, cap: int) -> np.ndarray:
    """Rows per group (``sizes`` in group order, ``cap`` below their sum) summing to ``cap``."""
    g = len(sizes)
    take = np.zeros(g, dtype=np.int64)
    if cap < g:  # one row of the largest groups, ties by group order
        order = sorted(range(g), key=lambda i: (-int(sizes[i]), i))
        take[order[:cap]] = 1
        return take
    # Groups whose proportional share is below one row get one; the rest of the cap goes to
    # the others in proportion, until no share is below one. Each floor of one is more than
    # that group's share, so what is left stays below the rows left: no group is asked for
    # more rows than it has.
    floored = np.zeros(g, dtype=bool)
    while True:
        budget, total = cap - int(floored.sum()), int(sizes[~floored].sum())
        small = ~floored & (budget * sizes < total)
        if not small.any():
            break
        floored |= small
    take[floored] = 1
    free = np.flatnonzero(~floored)
    # integer arithmetic: the same shares on every machine
    share, remainder = np.divmod(budget * sizes[free], total)
    left = budget - int(share.sum())
    share[np.argsort(-remainder, kind="stable")[:left]] += 1  # largest remainders, stable
    take[free] = share
    return take


def heatmap_rows(domains: Sequence[Sequence[str]], n: int) -> list[int]:
    """The ``n`` validation rows whose attention is drawn at every validation: a stratified
    sample as above, so with several dev sets they come from the largest domains, not all
    from the first one; the same rows at every validation and on every machine."""
    return stratified_rows(list(domains), n).rows.tolist()
