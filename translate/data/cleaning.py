"""Cleaning one split with Arrow columns and numpy, its pairs staged on disk.

The rules (the order matters: a pair is counted under the first reason that drops it):
``empty_side`` everywhere; in training only ``too_long``, ``length_ratio``, ``duplicate``
(identical to an earlier kept pair) and ``max_train_pairs`` (the first N survivors stay).
Identical pairs carry the union of their labels wherever they occur.

The first three depend on one pair alone, so they run batch by batch as the sources are
read, and the survivors go to a staging file. Duplicates and label unions need every pair:
they are found from one 64-bit hash per pair (8 bytes a pair in memory, not the pair),
first occurrence kept in the original order (``np.unique(..., return_index=True)``), and
every pair found equal to an earlier one by its hash is compared with it, string for string,
before it is dropped or merged, so that a hash collision can never lose a pair.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from translate.config import CleaningConfig
from translate.data.schema import FEATURES

try:  # a dependency of datasets; the hash only has to be fast, equality is checked anyway
    from xxhash import xxh3_64_intdigest as _hash64
except ImportError:  # pragma: no cover - datasets always brings it
    def _hash64(data: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")

SCHEMA = FEATURES.arrow_schema


# --------------------------------------------------------------------------- row rules


@functools.cache
def arrow_strips_like_python() -> bool:
    """Whether Arrow's ``utf8_trim_whitespace`` removes exactly what ``str.strip`` does.

    Checked once per process over every code point (the two follow their own Unicode
    tables); when they ever differ, stripping falls back to Python, so results never do."""
    points = np.arange(0x110000, dtype=np.uint32)
    points = points[(points < 0xD800) | (points > 0xDFFF)]
    text = points.astype("<u4").tobytes().decode("utf-32-le")
    widths = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    offsets = np.zeros(len(points) + 1, dtype=np.int32)
    np.cumsum(widths, out=offsets[1:])
    chars = pa.StringArray.from_buffers(len(points), pa.py_buffer(offsets),
                                        pa.py_buffer(text.encode("utf-8")))
    arrow_space = np.flatnonzero(pc.utf8_length(pc.utf8_trim_whitespace(chars)).to_numpy() == 0)
    # re's \s is str.isspace (both Py_UNICODE_ISSPACE), and scans the text in C
    python_space = [m.start() for m in re.finditer(r"\s", text)]
    return arrow_space.tolist() == python_space


def strip(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``str.strip`` of every string, in Arrow."""
    if arrow_strips_like_python():
        return pc.utf8_trim_whitespace(column)
    return pa.array([s.strip() for s in column.to_pylist()], pa.string())  # pragma: no cover


def strip_table(table: pa.Table) -> pa.Table:
    return table.set_column(0, "src", strip(table["src"])).set_column(
        1, "tgt", strip(table["tgt"]))


def pair_hashes(src: pa.Array | pa.ChunkedArray, tgt: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of ``src \\0 tgt`` per pair (the bytes are joined in Arrow)."""
    joined = pc.binary_join_element_wise(src.cast(pa.binary()), tgt.cast(pa.binary()), b"\x00")
    return np.fromiter(map(_hash64, joined.to_pylist()), dtype=np.uint64, count=len(joined))


# --------------------------------------------------------------------------- staging


class SplitRows:
    """One split's pairs that passed the per-pair rules, staged in arrival order on disk."""

    def __init__(self, split: str, cleaning: CleaningConfig, path: Path) -> None:
        self.split, self.cleaning, self.path = split, cleaning, path
        self.dropped: Counter = Counter()
        self.rows = 0
        self.sizes: list[int] = []  # rows per staged batch
        self.labelled = False
        self._writer = pa.ipc.new_file(str(path), SCHEMA)

    def add(self, table: pa.Table) -> None:
        """Stripped rows: counted and dropped by the per-pair rules, the rest staged."""
        c = self.cleaning
        n_src = pc.utf8_length(table["src"]).to_numpy()
        n_tgt = pc.utf8_length(table["tgt"]).to_numpy()
        keep = (n_src > 0) & (n_tgt > 0)
        self.dropped["empty_side"] += int(len(keep) - keep.sum())
        if self.split == "train":
            long_side = keep & ((n_src > c.max_chars) | (n_tgt > c.max_chars))
            self.dropped["too_long"] += int(long_side.sum())
            keep &= ~long_side
            short, longer = np.minimum(n_src, n_tgt), np.maximum(n_src, n_tgt)
            ratio = keep & (short >= c.min_chars_for_ratio) & (
                longer / np.maximum(short, 1) > c.max_ratio)
            self.dropped["length_ratio"] += int(ratio.sum())
            keep &= ~ratio
        kept = table.filter(pa.array(keep)) if not keep.all() else table
        if len(kept):
            self.labelled |= bool(pc.sum(pc.list_value_length(kept["domains"])).as_py() or 0)
            for batch in kept.cast(SCHEMA).to_batches():
                self._writer.write_batch(batch)
                self.sizes.append(batch.num_rows)
            self.rows += len(kept)

    def finish(self, out: Path, dedup: bool, max_pairs: int) -> dict:
        """Drop duplicates and pairs past ``max_pairs``, merge labels, write ``out``.

        Returns ``{"pairs", "domains"}`` (label counts of the kept pairs); the drops are
        in ``self.dropped``."""
        self._writer.close()
        staged = Staged(self.path, self.sizes)
        groups = None
        keep = np.ones(self.rows, dtype=bool)
        if self.rows and (dedup or self.labelled):
            groups, is_first = pair_groups(staged)
            if dedup:
                keep = is_first
                self.dropped["duplicate"] += int(self.rows - keep.sum())
        if max_pairs:
            past = np.flatnonzero(keep)[max_pairs:]
            keep[past] = False
            self.dropped["max_train_pairs"] += len(past)
        unions = _LabelUnions(staged, groups) if self.labelled else None
        domains: Counter = Counter()
        with pa.ipc.new_stream(str(out), SCHEMA) as writer:
            for start, batch in staged.batches():
                mask = keep[start:start + batch.num_rows]
                batch = batch.filter(pa.array(mask)) if not mask.all() else batch
                if unions is not None:
                    rows = np.flatnonzero(mask) + start
                    batch = batch.set_column(2, "domains", unions.of(groups[rows]))
                if batch.num_rows:
                    domains.update(_label_counts(batch.column(2)))
                    writer.write_batch(batch)
        staged.close()
        self.path.unlink()
        self.dropped = Counter({k: v for k, v in self.dropped.items() if v})
        return {"pairs": int(keep.sum()), "domains": domains}


class Staged:
    """Sequential and row-wise reads of a staging file (plain reads, not a memory map:
    the pages of a multi-gigabyte map would count as the process's resident memory)."""

    def __init__(self, path: Path, sizes: list[int] | None = None) -> None:
        """``sizes``: the rows of each batch, as written (else read from the file)."""
        self._file = pa.OSFile(str(path))
        self._reader = pa.ipc.open_file(self._file)
        if sizes is None:
            sizes = [self._reader.get_batch(i).num_rows
                     for i in range(self._reader.num_record_batches)]
        self.starts = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.starts[1:])

    def batches(self):
        for i in range(self._reader.num_record_batches):
            yield int(self.starts[i]), self._reader.get_batch(i)

    def take(self, rows: np.ndarray) -> pa.Table:
        """The rows at sorted indices ``rows``."""
        parts = []
        where = np.searchsorted(self.starts, rows, side="right") - 1
        for i in np.unique(where).tolist():
            local = rows[where == i] - self.starts[i]
            parts.append(pa.Table.from_batches([self._reader.get_batch(i)]).take(local))
        return pa.concat_tables(parts) if parts else SCHEMA.empty_table()

    def close(self) -> None:
        self._file.close()


# --------------------------------------------------------------------------- identical pairs


def pair_groups(staged: Staged, hash_fn=pair_hashes) -> tuple[np.ndarray, np.ndarray]:
    """A group id per staged pair (equal ids if and only if the pairs are identical) and
    whether each pair is the first of its group."""
    hashes = np.concatenate([hash_fn(b.column(0), b.column(1)) for _, b in staged.batches()])
    _, first, groups = np.unique(hashes, return_index=True, return_inverse=True)
    groups = groups.astype(np.int64)
    is_first = first[groups] == np.arange(len(groups))
    later = np.flatnonzero(~is_first)
    if later.size:
        wrong = _differ(staged, later, first[groups[later]])
        if wrong.size:  # a hash collision: group those pairs by their text
            groups = _regroup(staged, groups, np.unique(groups[wrong]))
            is_first = np.zeros(len(groups), dtype=bool)
            is_first[np.unique(groups, return_index=True)[1]] = True
    return groups, is_first


def _differ(staged: Staged, rows: np.ndarray, firsts: np.ndarray,
            block: int = 200_000) -> np.ndarray:
    """Indices into ``rows`` of the pairs that are not equal to the pair at ``firsts``."""
    wrong = []
    for a in range(0, len(rows), block):
        r, f = rows[a:a + block], firsts[a:a + block]
        uniq, back = np.unique(f, return_inverse=True)
        mine, theirs = staged.take(r), staged.take(uniq).take(back)
        same = pc.and_(pc.equal(mine["src"], theirs["src"]), pc.equal(mine["tgt"], theirs["tgt"]))
        wrong.append(np.flatnonzero(~same.to_numpy(zero_copy_only=False)) + a)
    return np.concatenate(wrong)


def _regroup(staged: Staged, groups: np.ndarray, bad: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(np.isin(groups, bad))
    table = staged.take(rows)
    seen: dict[int, dict[tuple[str, str], int]] = {}
    fresh = int(groups.max()) + 1
    groups = groups.copy()
    for row, s, t in zip(rows.tolist(), table["src"].to_pylist(), table["tgt"].to_pylist(),
                         strict=True):
        old = int(groups[row])
        texts = seen.setdefault(old, {})
        new = texts.get((s, t))
        if new is None:  # the group's first text keeps its id, every other text a new one
            new = old if not texts else fresh
            fresh += bool(texts)
            texts[(s, t)] = new
        groups[row] = new
    return groups


# --------------------------------------------------------------------------- labels


class _LabelUnions:
    """The sorted union of the labels of every pair in a group."""

    def __init__(self, staged: Staged, groups: np.ndarray) -> None:
        names: dict[str, int] = {}
        pair_groups_, pair_labels = [], []
        for start, batch in staged.batches():
            col = batch.column(2)
            flat = pc.list_flatten(col).to_pylist()
            parents = pc.list_parent_indices(col).to_numpy() + start
            pair_groups_.append(groups[parents])
            pair_labels.append(np.array([names.setdefault(x, len(names)) for x in flat],
                                        dtype=np.int64))
        self.names = pa.array(sorted(names), pa.string())
        rank = np.empty(len(names), dtype=np.int64)
        rank[[names[x] for x in sorted(names)]] = np.arange(len(names))
        width = max(len(names), 1)
        keys = np.unique(np.concatenate(pair_groups_) * width
                         + rank[np.concatenate(pair_labels)])
        self.labels = keys % width  # sorted by group, then by label name
        key_groups = keys // width
        self.first = np.searchsorted(key_groups, np.arange(int(groups.max()) + 2))

    def of(self, groups: np.ndarray) -> pa.ListArray:
        starts, stops = self.first[groups], self.first[groups + 1]
        counts = stops - starts
        offsets = np.zeros(len(groups) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        picks = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        return pa.ListArray.from_arrays(pa.array(offsets),
                                        self.names.take(pa.array(self.labels[picks])))


def _label_counts(domains: pa.Array) -> dict[str, int]:
    flat = pc.list_flatten(domains)
    if not len(flat):
        return {}
    counts = pc.value_counts(flat)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                    strict=True))
