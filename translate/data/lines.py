"""Parallel text files read as Arrow string arrays, a bounded block at a time.

A corpus of millions of lines must not pass through Python strings just to be read: the
bytes of each block are split on ``\\n`` with numpy and handed to Arrow as one string array
(one copy, no per-line objects), so reading costs about as much memory as one block.

The rules are those of reading a whole file at once (:func:`read_lines`): one segment per
``\\n``-terminated line (``str.splitlines`` would also split on U+2028, form feeds and other
separators found inside real segments), one trailing ``\\r`` removed, a leading byte-order
mark dropped, a last line without ``\\n`` kept, and invalid UTF-8 reported with its line and
byte. When both files of a pair have a problem, the source file's is the one reported, as
when each file was read whole before the other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from translate.data.schema import DataError

BLOCK_BYTES = 4 << 20
BATCH_ROWS = 50_000
READ_AHEAD = True  # the target file read by a second thread (see _ahead)
_BOM = b"\xef\xbb\xbf"


def read_lines(path: Path) -> list[str]:
    """Every line of a UTF-8 file as a Python list (small files; see :func:`line_arrays`)."""
    return [x for arr in line_arrays(path) for x in arr.to_pylist()]


def line_arrays(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[pa.StringArray]:
    """The lines of ``path`` as string arrays of whole lines, one per block of bytes."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    lines_before, carry, first = 0, b"", True
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(block_bytes)
            data = carry + chunk if carry else chunk
            if not chunk:  # end of file: what is left is a last line without "\n"
                if data:
                    yield _lines(path, data, lines_before, first, terminated=False)
                return
            cut = data.rfind(b"\n") + 1
            if not cut:
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            arr = _lines(path, block, lines_before, first, terminated=True)
            lines_before += len(arr)
            first = False
            yield arr


def _lines(path: Path, block: bytes, lines_before: int, at_start: bool,
           terminated: bool) -> pa.StringArray:
    """The lines of ``block`` (it starts at a line start; it ends with ``\\n`` when
    ``terminated``) without their ``\\n`` and one ``\\r`` before it."""
    buf = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    tail = 0 if not ends.size else int(ends[-1]) + 1
    skip = 3 if at_start and block.startswith(_BOM) else 0
    if not terminated and len(block) > max(tail, skip):  # a last line without "\n"
        ends = np.append(ends, len(block))
        starts = np.append(starts, tail)
    if skip and ends.size:
        starts[0] = skip
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    ends = ends - has_cr
    lengths = ends - starts
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # The bytes left out: every "\n", the "\r" removed before it, the byte-order mark.
    keep = buf != 10
    keep[ends[has_cr]] = False
    keep[:skip] = False
    data = buf[keep]
    arr = pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets.astype(np.int32)),
                                      pa.py_buffer(data))
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        raise _utf8_error(path, block, lines_before) from None
    return arr


def _utf8_error(path: Path, block: bytes, lines_before: int) -> DataError:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError as err:
        line = lines_before + block.count(b"\n", 0, err.start) + 1
        col = err.start - (block.rfind(b"\n", 0, err.start) + 1)
        return DataError(f"{path}:{line}: invalid UTF-8 ({err.reason} at byte {col} "
                         "of the line)")
    return DataError(f"{path}:{lines_before + 1}: invalid UTF-8")  # pragma: no cover


def _rebatch(arrays: Iterator[pa.StringArray], rows: int) -> Iterator[pa.StringArray]:
    """The same lines in arrays of exactly ``rows`` (the last one shorter)."""
    pending: list[pa.Array] = []
    held = 0
    for arr in arrays:
        pending.append(arr)
        held += len(arr)
        while held >= rows:
            joined = pa.concat_arrays(pending) if len(pending) > 1 else pending[0]
            yield joined.slice(0, rows)
            pending, held = [joined.slice(rows)], held - rows
    if held:
        yield pa.concat_arrays(pending) if len(pending) > 1 else pending[0]


def parallel_lines(src_path: Path, tgt_path: Path, rows: int = BATCH_ROWS,
                   ) -> Iterator[tuple[pa.StringArray, pa.StringArray]]:
    """Aligned batches of ``rows`` lines of two parallel files; an error when the counts
    differ (raised once both files are read, with both counts)."""
    src_it = _rebatch(line_arrays(src_path), rows)
    tgt_it = _rebatch(line_arrays(tgt_path), rows)
    if READ_AHEAD:
        tgt_it = _ahead(tgt_it)
    n_src = n_tgt = 0
    while True:
        src = next(src_it, None)
        try:
            tgt = next(tgt_it, None)
        except DataError:
            _count(src_it)  # an error of the source file wins
            raise
        n_src += len(src) if src is not None else 0
        n_tgt += len(tgt) if tgt is not None else 0
        if src is None and tgt is None:
            return
        if src is None or tgt is None or len(src) != len(tgt):
            n_src += _count(src_it)
            n_tgt += _count(tgt_it)
            raise DataError(f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}: "
                            "parallel files must line up line by line")
        yield src, tgt


def _count(arrays: Iterator[pa.Array]) -> int:
    return sum(len(a) for a in arrays)


def _ahead(items: Iterator, depth: int = 2) -> Iterator:
    """``items`` produced by a thread, ``depth`` ahead of the caller: splitting and checking
    a block is numpy and Arrow work that releases the GIL, so the two files of a pair are
    read on two cores. An exception in the thread is raised at the caller's ``next``."""
    box: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            put((None, err))

    thread = threading.Thread(target=run, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = box.get()
            if ok is None:
                raise item
            if not ok:
                return
            yield item
    finally:
        stop.set()
        thread.join()
