"""Encode a prepared corpus into the on-disk store (:mod:`translate.data.encoded`) on all cores.

The splits are cut into blocks of rows; each block is read from the corpus's Arrow files,
tokenized in one batched sentencepiece call per side and flattened to arrays by a worker
process (forked, so the tokenizer and the memory-mapped corpus are shared, not copied); the
parent writes the blocks in order, so the result does not depend on the number of workers.
Sentencepiece's own threads would parallelise only the tokenizing; the Python work around
it (lists to arrays, labels) is as large, hence processes.

The tokenizer is passed in as two encode functions, so this package knows nothing of it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np
from tqdm import tqdm

from translate.data.encoded import (
    Encoder,
    MappedSplit,
    check_entry,
    entry_key,
    flatten,
    id_dtype,
    open_entry,
    write_entry,
)
from translate.data.schema import DataError

BLOCK_ROWS = 50_000
_JOB: dict = {}  # what the forked workers need; set by the parent just before it forks


def workers_for(rows: int, requested: int = 0) -> int:
    """Worker processes: ``requested`` or every core, never more than there are blocks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    want = requested or cores or 1
    return max(1, min(want, -(-rows // BLOCK_ROWS)))


def _block(task: tuple[str, int, int]) -> tuple:
    name, start, stop = task
    table = _JOB["splits"][name].with_format("arrow")[start:stop]
    src = table.column("src").to_pylist()
    tgt = table.column("tgt").to_pylist()
    limit, dtype = _JOB["max_len"], _JOB["dtype"]
    # Sent back to the parent in the stored type: a quarter of the bytes of int64.
    out_src = _compact(*flatten(_JOB["encode_src"](src), limit), dtype)
    out_tgt = _compact(*flatten(_JOB["encode_tgt"](tgt), limit), dtype)
    index = _JOB["labels"]
    labels = None
    if index:
        labels = []
        for row, names in enumerate(table.column("domains").to_pylist()):
            try:
                labels.append(sorted({index[n] for n in names or ()}))
            except KeyError as err:
                raise DataError(f"{name} row {start + row}: domain label {err.args[0]!r} is "
                                f"not in the label vocabulary {list(index)}") from None
    return out_src, out_tgt, labels


def _compact(flat: np.ndarray, lengths: np.ndarray, n_cut: int, dtype: np.dtype) -> tuple:
    return flat.astype(dtype), lengths.astype(np.int32), n_cut


def _blocks(splits: dict[str, datasets.Dataset], pool, bar) -> dict[str, Iterator[tuple]]:
    def run(name: str) -> Iterator[tuple]:
        n = len(splits[name])
        tasks = [(name, a, min(n, a + BLOCK_ROWS)) for a in range(0, n, BLOCK_ROWS)]
        results = pool.map(_block, tasks) if pool is not None else map(_block, tasks)
        for result in results:
            bar.update(int(result[0][1].size))
            yield result
    return {name: run(name) for name in splits}


def encode_corpus(splits: dict[str, datasets.Dataset], corpus_key: str, tokenizer_key: str,
                  encode_src: Encoder, encode_tgt: Encoder, vocab_size: int,
                  labels: Sequence[str], max_len: int, cache_dir: str | Path,
                  workers: int = 0, log: Callable[[str], None] = print,
                  ) -> tuple[dict[str, MappedSplit], dict]:
    """The encoded splits from the cache, encoding them first when the entry is missing or
    damaged; returns them with a report (``path``, ``cache_hit``, ``seconds``, ``bytes``)."""
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    start = time.perf_counter()
    key = entry_key(corpus=corpus_key, tokenizer=tokenizer_key, labels=list(labels),
                    max_len=max_len, vocab_size=vocab_size)
    entry = Path(cache_dir) / f"encoded-{key}"
    manifest, why = check_entry(entry, key)
    hit = manifest is not None
    if not hit:
        if entry.exists():
            log(f"data: rebuilding the encoded corpus {entry}: {why}")
        rows = sum(len(ds) for ds in splits.values())
        n_workers = workers_for(rows, workers)
        _JOB.update(splits=splits, encode_src=encode_src, encode_tgt=encode_tgt,
                    max_len=max_len, dtype=id_dtype(vocab_size),
                    labels={lab: i for i, lab in enumerate(labels)})
        pool = None
        try:
            if n_workers > 1:
                pool = concurrent.futures.ProcessPoolExecutor(
                    n_workers, mp_context=multiprocessing.get_context("fork"))
            with tqdm(total=rows, desc="encoding", unit="pairs", disable=None,
                      leave=False) as bar:
                write_entry(entry, key, vocab_size, len(labels), _blocks(splits, pool, bar))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            _JOB.clear()
        manifest, why = check_entry(entry, key)
        if manifest is None:  # pragma: no cover - a disk that loses what was just written
            raise DataError(f"{entry}: the encoded corpus just written does not check: {why}")
        log(f"data: encoded {rows} pairs with {n_workers} worker(s) into {entry} in "
            f"{time.perf_counter() - start:.1f}s")
    else:
        log(f"data: encoded corpus from cache {entry}")
    report = {"path": str(entry), "cache_hit": hit,
              "bytes": sum(f["bytes"] for f in manifest["files"].values()),
              "seconds": round(time.perf_counter() - start, 3)}
    return open_entry(entry, manifest), report
