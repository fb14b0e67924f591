"""The repository speaks to its users: no tracked text file (code, docstrings, configs,
scripts, tests, JSON, documentation) refers to how it was developed -- to work sessions or
to numbered issues -- but to the documentation page that holds the figures, or to nothing.

CHANGELOG.md is left out (a history may name them); so is this file, which holds the
patterns. Technical uses of the word are allowed where an API spells it so: pytest's
``scope="session"``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"CHANGELOG.md", "tests/test_wording.py"}
PATTERNS = [re.compile(r"\bsessions?\b", re.IGNORECASE),
            re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE),
            re.compile(r"\bthis turn\b", re.IGNORECASE)]
# Technical spellings, removed from a line before it is searched.
ALLOWED = re.compile(r"""scope=["']session["']""")


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout (the wording check reads git ls-files)")
    return [name for name in out.decode("utf-8").split("\0") if name]


def _lines(path: Path) -> list[str]:
    """The file's lines, or none for what is not a readable text file (a directory link,
    a file deleted in the work tree, binary data)."""
    if path.is_symlink() or not path.is_file():
        return []
    data = path.read_bytes()
    if b"\0" in data:
        return []
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return []


def test_no_process_words_in_tracked_files() -> None:
    found = []
    for name in _tracked():
        if name in SKIP:
            continue
        for number, line in enumerate(_lines(ROOT / name), 1):
            text = ALLOWED.sub("", line)
            if any(p.search(text) for p in PATTERNS):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, ("words of how the project was developed (refer users to the docs "
                       "page instead):\n" + "\n".join(found))
