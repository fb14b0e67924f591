"""Lines in and out of ``python -m translate.infer``, safe with any bytes.

Input is split on ``\\n`` only and decoded line by line (invalid UTF-8 replaced and
counted, not fatal), in bounded chunks so that a pipe is answered as it goes and a huge file
needs no more memory than one chunk; output to a file goes through a temporary file that is
renamed only on success.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = ["BadLines", "atomic_output", "count_lines", "decode_line", "read_chunks",
           "read_lines"]


# --------------------------------------------------------------------------- reading


def decode_line(raw: bytes, number: int) -> tuple[str, bool]:
    """One line's bytes (with or without its ``\\n``) as text; True when UTF-8 was invalid."""
    line = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        text, bad = line.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad = line.decode("utf-8", errors="replace"), True
    if number == 1:
        text = text.removeprefix("\ufeff")
    return text, bad


def read_lines(data: bytes) -> tuple[list[str], list[int]]:
    """Split ``data`` into lines on ``\\n`` only; returns (lines, 1-based bad-UTF-8 lines)."""
    lines, bad = [], []
    for number, raw in enumerate(io.BytesIO(data), start=1):
        text, invalid = decode_line(raw, number)
        lines.append(text)
        if invalid:
            bad.append(number)
    return lines, bad


class BadLines:
    """Where invalid UTF-8 was replaced: the first few line numbers (all that a warning names)
    and the total, so that a huge broken input does not grow a list of every number."""

    KEPT = 20

    def __init__(self) -> None:
        self.first: list[int] = []
        self.total = 0

    def add(self, number: int) -> None:
        self.total += 1
        if len(self.first) < self.KEPT:
            self.first.append(number)

    def __str__(self) -> str:
        more = self.total - len(self.first)
        return ", ".join(map(str, self.first)) + (f" and {more} more" if more else "")


def read_chunks(stream: BinaryIO, size: int, bad: BadLines) -> Iterator[list[str]]:
    """Lines of ``stream`` in lists of ``size`` (the last may be shorter), read as they come:
    memory stays bounded by one chunk and a pipe is answered chunk by chunk. Binary line
    iteration splits on ``\\n`` only, like :func:`read_lines`; bad-UTF-8 lines are added
    to ``bad``."""
    chunk: list[str] = []
    for number, raw in enumerate(stream, start=1):
        text, invalid = decode_line(raw, number)
        chunk.append(text)
        if invalid:
            bad.add(number)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count_lines(path: Path) -> int:
    """Lines in a file, as :func:`read_lines` counts them, without holding it in memory."""
    count, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """A temporary file beside ``path``, renamed onto it only when the block succeeds: a
    failed or interrupted run never leaves a partial file under the final name."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
