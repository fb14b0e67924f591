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
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from translate.errors import TranslateError

__all__ = ["BadLines", "OutputError", "atomic_output", "check_output", "count_lines",
           "decode_line", "read_chunks", "read_document", "read_lines", "translation_record"]


# --------------------------------------------------------------------------- records


def translation_record(result, n_best: int) -> dict:
    """One :class:`~translate.inference.translator.Translation` as ``--format jsonl`` writes
    it (and ``python -m translate.serve``'s ``/v1/translate`` answers it): one place for the
    field names, so the two cannot drift apart."""
    obj: dict = {"translation": result.text, "score": result.score,
                 "scores_over": result.scores_over}
    if n_best > 1:
        obj["nbest"] = [{"translation": t, "score": s} for t, s in result.nbest]
    if result.attention is not None:
        from translate.search.attention_view import add_attention_json

        add_attention_json(obj, result)
    obj["domains"] = result.domains
    obj["domain_probs"] = result.domain_probs
    if result.conditioned_by is not None:
        obj["conditioning"] = {"by": result.conditioned_by, "weights": result.conditioning}
    if result.warnings:
        obj["warnings"] = result.warnings
    return obj


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


def read_document(stream: BinaryIO, bad: BadLines) -> Iterator[list[str]]:
    """The whole of ``stream`` as one text (``infer --whole-file``): line breaks kept,
    invalid UTF-8 replaced and its lines added to ``bad``, a leading BOM dropped."""
    data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        for number in read_lines(data)[1]:
            bad.add(number)
    yield [text.removeprefix("\ufeff")]


def count_lines(path: Path) -> int:
    """Lines in a file, as :func:`read_lines` counts them, without holding it in memory."""
    count, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class OutputError(TranslateError):
    """The output file could not be written (disk full, quota, I/O error)."""


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[Callable[[str], None]]:
    """A function writing text to a temporary file beside ``path``, renamed onto it only when
    the block succeeds: a failed or interrupted run never leaves a partial file under the
    final name. A failed write (disk full...) is an :class:`OutputError` naming ``path``."""
    target, direct = _output_target(path)
    if direct:  # a device or pipe (/dev/stdout, a FIFO): written as it comes, never replaced
        tmp, out = None, open(target, "w", encoding="utf-8", newline="\n")
    else:
        fd, tmp = _temp_beside(target, "part")
        with contextlib.suppress(OSError):  # a file it replaces keeps its permissions
            os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
        out = open(fd, "w", encoding="utf-8", newline="\n")

    def failed(err: OSError) -> OutputError:
        return OutputError(f"--output {path}: could not write ({err.strerror or err})"
                           + ("" if direct else "; nothing was written under that name"))

    def write(text: str) -> None:
        try:
            out.write(text)
            if direct:
                out.flush()  # a pipe's reader gets each chunk as it is done, as on stdout
        except OSError as err:
            raise failed(err) from None

    try:
        yield write
        try:
            out.close()
            if tmp is not None:
                os.replace(tmp, target)
        except OSError as err:
            raise failed(err) from None
    except BaseException:
        with contextlib.suppress(OSError):
            out.close()
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def check_output(path: str) -> None:
    """Raise :class:`OutputError` when ``--output path`` cannot be written, before any work:
    a file is created and removed beside it, as :func:`atomic_output` will."""
    target, direct = _output_target(path)
    if target.is_dir():
        raise OutputError(f"--output {path}: is a folder; name a file")
    if direct:
        if not os.access(target, os.W_OK):
            raise OutputError(f"--output {path}: not writable")
        return
    if not target.parent.is_dir():
        raise OutputError(f"--output {path}: folder {target.parent} does not exist")
    try:
        fd, tmp = _temp_beside(target, "probe")  # never taken for the output's own temp file
    except OSError as err:
        raise OutputError(f"--output {path}: cannot create a file in {target.parent} "
                          f"({err.strerror or err})") from None
    os.close(fd)
    os.unlink(tmp)


def _temp_beside(target: Path, suffix: str) -> tuple[int, str]:
    """A new hidden file in ``target``'s folder (same file system: the rename is atomic),
    named as :func:`translate.runs.checkpoint.atomic_write_text` names its own and, like it, made
    by a plain exclusive open: the umask's permissions, not ``mkstemp``'s private 0600."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.{suffix}")
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)


def _output_target(path: str) -> tuple[Path, bool]:
    """Where ``--output path`` writes, and whether directly: a device or pipe (``/dev/stdout``,
    a FIFO) is written as output comes and never replaced; a regular file is replaced
    atomically, through a symbolic link to it (the link stays a link)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # a new file
        return Path(path), False
    if stat.S_ISREG(mode):
        return Path(os.path.realpath(path)), False
    return Path(path), not stat.S_ISDIR(mode)
