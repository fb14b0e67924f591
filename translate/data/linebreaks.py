"""One output per input line: what may not appear inside a line of text we write.

Its own module, importing nothing, so ``infer`` (which must start fast) and the trainer's
hypothesis files share one rule.
"""

from __future__ import annotations

# Characters that some readers (str.splitlines, editors) treat as line breaks. A model can
# output one (its training text had one), and inside a line of a one-line-per-input file it
# would make a reader count more lines than were written.
_BREAKS = {ord(c): " " for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with every line-break character replaced by a space: safe as one line."""
    return text.translate(_BREAKS)
