"""Encoded splits on disk: each split's piece ids as flat arrays plus offsets, read on demand.

A split is encoded once into ``cache_dir/encoded-<key>/``; the key hashes the corpus cache
key (inputs and cleaning), the tokenizer's fingerprint (its serialized models), the label
vocabulary and ``max_tokens``, so any of them changing encodes again, and a second run with
the same data only opens files.

Why plain numpy files and not Arrow / ``datasets`` columns:

- the smallest sufficient integer type: ``uint16`` for vocabularies up to 65,536 pieces
  (2 bytes a token, plus an int64 offset per row), where a ``datasets`` list column stores
  int32/int64 values and int32 offsets;
- a row is two offset reads and one read of its ids, positioned (``os.pread``), so batches
  never page the corpus into the training process: its resident memory holds the lengths
  arrays the sampler needs (4 bytes a row and side) and nothing that grows with the text.
  A memory map would save the system calls (two per row and side, small next to a training
  step), but the pages it touches count as the process's resident memory and an epoch
  touches them all;
- the files are written sequentially and hashed while written, so a ``manifest.json``
  with every file's size and sha256 -- written last, atomically -- tells a complete entry
  from a truncated or corrupted one; such an entry is rebuilt, never read.

Row layout matches :class:`translate.data.batching.EncodedSplit`: pieces only, cut to
``max_len``; labels as sorted indices into the run's label list.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_READ_ROWS = 65536  # rows per read when a whole column is iterated
_HASH_CHUNK = 8 << 20

# Texts -> one row of ids per text: lists of ints, or numpy arrays (the fast path).
Encoder = Callable[[list[str]], Sequence[Sequence[int]]]


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id below ``vocab_size``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise ValueError(f"vocabulary of {vocab_size} ids does not fit in 32 bits")


# --------------------------------------------------------------------------- reading


class _File:
    """A read-only file opened lazily per process (forked or pickled readers reopen it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = -1

    def pread(self, nbytes: int, offset: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        data = os.pread(self._fd, nbytes, offset)
        if len(data) != nbytes:
            raise OSError(f"{self.path}: short read ({len(data)} of {nbytes} bytes at {offset})")
        return data

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


class RaggedColumn(Sequence[list[int]]):
    """Rows of ids stored as ``ids`` (flat) and ``offsets`` (int64, rows + 1) files.

    ``column[i]`` is a list of ints like a row of an in-memory split; a slice is a list of
    rows (validation takes the first n); iteration reads blocks of rows at a time.
    """

    def __init__(self, ids: Path, offsets: Path, dtype: np.dtype, rows: int) -> None:
        self._ids, self._off = _File(ids), _File(offsets)
        self.dtype, self._rows = np.dtype(dtype), rows

    def __len__(self) -> int:
        return self._rows

    def _offsets(self, start: int, stop: int) -> np.ndarray:
        """offsets[start:stop + 1]."""
        raw = self._off.pread(8 * (stop - start + 1), 8 * start)
        return np.frombuffer(raw, dtype=np.int64)

    def _block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        off = self._offsets(start, stop)
        size = self.dtype.itemsize
        flat = np.frombuffer(self._ids.pread(size * int(off[-1] - off[0]), size * int(off[0])),
                             dtype=self.dtype)
        return flat, off - off[0]

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(self._rows)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._rows_of(start, max(start, stop))
        i = int(index)
        if i < 0:
            i += self._rows
        if not 0 <= i < self._rows:
            raise IndexError(f"row {index} out of range for {self._rows} rows")
        flat, _ = self._block(i, i + 1)
        return flat.tolist()

    def _rows_of(self, start: int, stop: int) -> list[list[int]]:
        if start == stop:
            return []
        flat, off = self._block(start, stop)
        ids = flat.tolist()
        bounds = off.tolist()
        return [ids[a:b] for a, b in itertools.pairwise(bounds)]

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, self._rows, _READ_ROWS):
            yield from self._rows_of(start, min(self._rows, start + _READ_ROWS))

    def blocks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids as int64, row lengths) of consecutive blocks of ``rows`` rows."""
        for start in range(0, self._rows, rows):
            flat, off = self._block(start, min(self._rows, start + rows))
            yield flat.astype(np.int64), np.diff(off)

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """All ids (int64) and per-row lengths."""
        parts = list(self.blocks(1 << 20))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def lengths(self) -> array.array:
        """Row lengths as a compact array of Python ints (4 bytes a row)."""
        out = array.array("i")
        for start in range(0, self._rows, 1 << 20):
            off = self._offsets(start, min(self._rows, start + (1 << 20)))
            out.frombytes(np.diff(off).astype(np.int32).tobytes())
        return out


class EmptyRows(Sequence[list[int]]):
    """``rows`` empty label lists (a split without labels stores no label files)."""

    def __init__(self, rows: int) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [[] for _ in range(*index.indices(self._rows))]
        if not -self._rows <= int(index) < self._rows:
            raise IndexError(f"row {index} out of range for {self._rows} rows")
        return []


class MappedSplit:
    """An encoded split read from disk, with :class:`~translate.data.batching.EncodedSplit`'s
    interface: ``src_ids[i]``, ``tgt_ids[i]``, ``label_ids[i]``, ``src_lens``, ``tgt_lens``,
    ``n_labels``, ``len()`` and the truncation counts."""

    def __init__(self, entry: Path, name: str, info: dict, dtype: np.dtype) -> None:
        rows = int(info["pairs"])
        self.src_ids = RaggedColumn(entry / f"{name}.src.ids", entry / f"{name}.src.offsets",
                                    dtype, rows)
        self.tgt_ids = RaggedColumn(entry / f"{name}.tgt.ids", entry / f"{name}.tgt.offsets",
                                    dtype, rows)
        self.n_labels = int(info["n_labels"])
        self.label_ids: Sequence[list[int]] = (
            RaggedColumn(entry / f"{name}.labels.ids", entry / f"{name}.labels.offsets",
                         id_dtype(self.n_labels), rows) if self.n_labels else EmptyRows(rows))
        self.n_truncated_src = int(info["truncated_src"])
        self.n_truncated_tgt = int(info["truncated_tgt"])
        self._rows = rows
        tgt = self.tgt_ids.lengths()
        src = self.src_ids.lengths()
        # As EncodedSplit.src_lens: an empty source counts as length 1 (collate adds eos).
        self.src_lens = array.array("i", np.maximum(np.frombuffer(src, np.int32), 1).tobytes())
        self.tgt_lens = tgt

    def __len__(self) -> int:
        return self._rows

    def label_counts(self) -> tuple[np.ndarray, int]:
        """(rows carrying each label, rows with at least one label): pos_weight's inputs."""
        if not self.n_labels:
            return np.zeros(0, np.int64), 0
        ids, lengths = self.label_ids.flat()  # type: ignore[union-attr]
        return np.bincount(ids, minlength=self.n_labels), int((lengths > 0).sum())


# --------------------------------------------------------------------------- writing


class _Writer:
    """Appends arrays to one file, hashing what it writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(arr).tobytes()
        self.file.write(data)
        self.sha.update(data)
        self.bytes += len(data)

    def close(self) -> dict:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"bytes": self.bytes, "sha256": self.sha.hexdigest()}


class _RaggedWriter:
    def __init__(self, entry: Path, stem: str, dtype: np.dtype) -> None:
        self.ids = _Writer(entry / f"{stem}.ids")
        self.offsets = _Writer(entry / f"{stem}.offsets")
        self.dtype = dtype
        self.total = 0
        self.offsets.write(np.zeros(1, np.int64))

    def append(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        self.ids.write(flat.astype(self.dtype, copy=False))
        self.offsets.write(self.total + np.cumsum(lengths, dtype=np.int64))
        self.total += int(flat.size)

    def close(self) -> dict:
        return {self.ids.path.name: self.ids.close(),
                self.offsets.path.name: self.offsets.close()}


def flatten(rows: Sequence[Sequence[int]], max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows (lists of ints, or numpy arrays as :class:`Encoder` may return) -> (flat ids cut to
    ``max_len`` per row, lengths after the cut, rows cut)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if rows and isinstance(rows[0], np.ndarray):
        flat = np.concatenate(rows)
    else:
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                           count=int(lengths.sum()))
    cut = lengths > max_len
    n_cut = int(cut.sum())
    if n_cut:
        starts = np.cumsum(lengths) - lengths
        position = np.arange(flat.size) - np.repeat(starts, lengths)
        flat = flat[position < max_len]
        lengths = np.minimum(lengths, max_len)
    return flat, lengths, n_cut


def _write_split(entry: Path, name: str, chunks: Iterator[tuple], dtype: np.dtype,
                 n_labels: int) -> tuple[dict, dict]:
    """Write one split from ``(src_rows, tgt_rows, label_rows)`` chunks of flattened rows."""
    src = _RaggedWriter(entry, f"{name}.src", dtype)
    tgt = _RaggedWriter(entry, f"{name}.tgt", dtype)
    labels = _RaggedWriter(entry, f"{name}.labels", id_dtype(n_labels)) if n_labels else None
    info = {"pairs": 0, "truncated_src": 0, "truncated_tgt": 0, "n_labels": n_labels}
    for (s_flat, s_len, s_cut), (t_flat, t_len, t_cut), label_rows in chunks:
        src.append(s_flat, s_len)
        tgt.append(t_flat, t_len)
        if labels is not None:
            l_flat, l_len, _ = flatten(label_rows, n_labels)
            labels.append(l_flat, l_len)
        info["pairs"] += int(s_len.size)
        info["truncated_src"] += s_cut
        info["truncated_tgt"] += t_cut
    files = {**src.close(), **tgt.close(), **(labels.close() if labels else {})}
    return info, files


def write_entry(entry: Path, key: str, vocab_size: int, n_labels: int,
                splits: dict[str, Iterator[tuple]]) -> None:
    """Write every split into a fresh ``entry``, the manifest last, then move it in place."""
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = id_dtype(vocab_size)
    manifest: dict = {"format_version": FORMAT_VERSION, "key": key, "dtype": dtype.str,
                      "vocab_size": vocab_size, "splits": {}, "files": {}}
    try:
        for name, chunks in splits.items():
            info, files = _write_split(tmp, name, chunks, dtype, n_labels)
            manifest["splits"][name] = info
            manifest["files"].update(files)
    except BaseException:  # a bad label, Ctrl-C: leave no half-written directory behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    part = tmp / f"{MANIFEST}.part"
    part.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(part, tmp / MANIFEST)
    publish(tmp, entry)


def publish(tmp: Path, entry: Path) -> None:
    """Move the finished directory ``tmp`` to ``entry``, replacing an older one. When another
    process (a second rank) published the same entry meanwhile, its copy stays and ours goes:
    both hold the same content, and the caller checks the manifest either way."""
    try:
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- checking


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def check_entry(entry: Path, key: str) -> tuple[dict | None, str]:
    """The manifest of a complete, intact entry for ``key``; else (None, why not)."""
    path = entry / MANIFEST
    if not path.is_file():
        return None, "no manifest (never built, or interrupted)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("key") != key:
            return None, "written by another version or for other inputs"
        for name, want in manifest["files"].items():
            file = entry / name
            size = file.stat().st_size if file.is_file() else -1
            if size != want["bytes"]:
                return None, f"{file}: {size} bytes, the manifest says {want['bytes']}"
            if _sha256(file) != want["sha256"]:
                return None, f"{file}: checksum differs from the manifest"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return None, f"unreadable manifest ({err!r})"
    return manifest, ""


def open_entry(entry: Path, manifest: dict) -> dict[str, MappedSplit]:
    dtype = np.dtype(manifest["dtype"])
    return {name: MappedSplit(entry, name, info, dtype)
            for name, info in manifest["splits"].items()}


def entry_key(**parts) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]
