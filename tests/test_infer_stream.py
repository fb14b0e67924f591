"""``infer`` streams: a pipe is answered chunk by chunk, and ``--output`` appears whole or not
at all. Real subprocesses on the shared tiny de→en run."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from translate.infer import BadLines, read_chunks

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 256  # infer's smallest chunk: max(batch_size * 8 * workers, 256) with --batch-size 8


@pytest.fixture(scope="module")
def german(multi30k: Path) -> list[str]:
    return multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()


def _infer(trained_run: Path, *args: str, stdin=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # A suite started in the background by a shell without job control (`pytest &`, nohup)
    # inherits SIGINT ignored, and so would the child, which then cannot be interrupted
    # (Python keeps an inherited SIG_IGN). A handler set here is reset to the default by
    # exec, so the child starts as it would from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "translate.infer", "--model", str(trained_run), "--beam",
             "1", "--batch-size", "8", "--device", "cpu", "--threads", "1", *args],
            cwd=ROOT, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)


def _read_lines(stream, count: int, timeout: float = 240) -> list[bytes]:
    deadline, lines = time.monotonic() + timeout, []
    while len(lines) < count:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"only {len(lines)} of {count} lines came back before the timeout"
        lines.append(stream.readline())
    return lines


def test_read_chunks_bounds_and_keeps_every_line():
    import io

    bad = BadLines()
    data = b"a\r\n\n\xff\nd\xe2\x80\xa8e\n" * 30 + b"last"
    chunks = list(read_chunks(io.BytesIO(data), 7, bad))
    assert [len(c) for c in chunks] == [7] * 17 + [2]
    lines = [line for c in chunks for line in c]
    assert lines[:4] == ["a", "", "\ufffd", "d\u2028e"] and lines[-1] == "last"
    assert bad.total == 30 and str(bad).endswith("and 10 more") and bad.first[0] == 3


def test_a_terminal_gets_each_line_back_as_it_is_typed(trained_run, german):
    """stdin a terminal (a pseudo-terminal here): each line is translated when it is entered,
    not after a chunk of 256 lines, and a hint says how to end."""
    controller, terminal = pty.openpty()
    proc = _infer(trained_run, stdin=terminal)
    os.close(terminal)
    try:
        for sentence in german[:2]:
            os.write(controller, (sentence + "\n").encode())
            (line,) = _read_lines(proc.stdout, 1)
            assert line.endswith(b"\n") and line.strip()
        assert proc.poll() is None  # still waiting for the next line
        os.write(controller, b"\x04")  # Ctrl-D on an empty line: end of input
        assert proc.wait(timeout=120) == 0
        assert proc.stdout.read() == b""
        assert "translating each line you type; Ctrl-D ends" in proc.stderr.read().decode()
    finally:
        proc.kill()
        os.close(controller)


def test_first_chunk_is_answered_before_stdin_closes(trained_run, german):
    proc = _infer(trained_run)
    try:
        proc.stdin.write(("\n".join(german[:CHUNK]) + "\n").encode())
        proc.stdin.flush()
        first = _read_lines(proc.stdout, CHUNK)  # stdin is still open
        assert proc.poll() is None
        proc.stdin.write(("\n".join(german[CHUNK:CHUNK + 10]) + "\n").encode())
        proc.stdin.close()
        rest = proc.stdout.read().splitlines()
        assert proc.wait(timeout=240) == 0, proc.stderr.read()[-2000:]
    finally:
        proc.kill()
    assert len(first) == CHUNK and len(rest) == 10
    assert all(line.endswith(b"\n") for line in first)
    assert sum(bool(line.strip()) for line in first) > CHUNK * 0.9


def test_output_is_renamed_into_place_only_on_success(trained_run, german, tmp_path):
    out = tmp_path / "out.en"
    out.write_text("previous\n", encoding="utf-8")
    proc = _infer(trained_run, "--output", str(out))
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".out.en.*.part")):  # model loaded, temp file open
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        proc.stdin.write(("\n".join(german[:CHUNK]) + "\n").encode())
        proc.stdin.flush()
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # a failed run, mid-way
        assert proc.wait(timeout=240) == 130, proc.stderr.read()[-2000:]
    finally:
        proc.kill()
    assert out.read_text(encoding="utf-8") == "previous\n"  # untouched, no partial file
    assert list(tmp_path.iterdir()) == [out]  # and the temp file is gone

    proc = _infer(trained_run, "--output", str(out))
    _, err = proc.communicate(("\n".join(german[:20]) + "\n").encode(), timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert out.read_text(encoding="utf-8").count("\n") == 20
    assert list(tmp_path.iterdir()) == [out]
