"""The one row layout every corpus source produces, and the error its readers raise.

Rows are ``{src, tgt, domains}`` in a ``datasets.Dataset``. The readers
(:mod:`translate.data.sources`, :mod:`translate.data.gettext_corpus`) and the corpus
builder all build on this module, and it imports none of them, so the data modules import
in one direction only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import datasets
import numpy as np
import pyarrow as pa

from translate.errors import TranslateError

FEATURES = datasets.Features(
    {
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
        "domains": datasets.List(datasets.Value("string")),
    }
)


class DataError(TranslateError, ValueError):
    """A data problem a person can fix; the message names the file, line or column."""


def make_dataset(src: list[str], tgt: list[str], domains: list[list[str]]) -> datasets.Dataset:
    """Build an in-memory dataset with the fixed schema (empty label lists stay typed).

    The arrow table is built directly: ``Dataset.from_dict`` encodes row by row through
    ``Features`` and is ~50x slower on the 140k-pair corpora.
    """
    table = pa.Table.from_pydict({"src": src, "tgt": tgt, "domains": domains},
                                 schema=FEATURES.arrow_schema)
    return datasets.Dataset(table)


def columns(ds: datasets.Dataset, *names: str) -> list[list]:
    """Whole columns as Python lists in one arrow conversion (respects select/shuffle).

    ``ds["col"]`` iterates and decodes row by row in datasets >= 4, far too slow here.
    """
    table = ds.with_format("arrow")[:]
    return [table.column(n).to_pylist() for n in names]


def sample_columns(ds: datasets.Dataset, rows: np.ndarray, *names: str) -> list[list]:
    """The columns ``names`` at the sorted row numbers ``rows``, as Python lists.

    A dataset backed by one cache file (a prepared corpus's split) is read record batch by
    record batch with ordinary reads: ``ds.select(rows)`` on the memory-mapped file would
    fault most of its pages into this process (a 1% sample touches nearly every page), so the
    resident size would grow with the corpus instead of with the sample.
    """
    files = ds.cache_files
    if len(files) != 1 or ds._indices is not None:  # in memory, or already a selection
        return columns(ds.select(rows), *names)
    out: list[list] = [[] for _ in names]
    start = 0
    with pa.OSFile(files[0]["filename"]) as fh:
        for batch in pa.ipc.open_stream(fh):
            lo, hi = np.searchsorted(rows, [start, start + batch.num_rows])
            if hi > lo:
                part = batch.take(pa.array(rows[lo:hi] - start))
                for column, name in zip(out, names, strict=True):
                    column.extend(part.column(name).to_pylist())
            start += batch.num_rows
    if start != len(ds):
        raise DataError(f"{files[0]['filename']}: the cached corpus file holds {start} rows "
                        f"where {len(ds)} were expected; delete it to prepare the corpus again")
    return out


class TextColumn(Sequence[str]):
    """One string column of a dataset, read on demand: ``col[i]``, ``col[:n]``, iteration.

    Training keeps the validation sources/references (and could keep the training text)
    this way without copying a large corpus into Python strings.
    """

    _BLOCK = 65536

    def __init__(self, ds: datasets.Dataset, name: str) -> None:
        self._table = ds.with_format("arrow")
        self._name = name

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            if stop <= start:
                return []
            return self._table[start:stop].column(self._name).to_pylist()
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        return self._table[i:i + 1].column(self._name)[0].as_py()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), self._BLOCK):
            yield from self[start:start + self._BLOCK]
