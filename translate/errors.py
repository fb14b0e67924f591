"""The one base class of the errors a person can act on.

Every module raises its own subclass (``ConfigError``, ``DataError``, ``CheckpointError``,
...), with a one-line message that names the file, line or field. The command-line entry
points catch this base and print that line instead of a traceback; anything else is a bug
and keeps its traceback. Kept free of imports so that any module, and every CLI before it
loads torch, can use it.
"""

from __future__ import annotations


class TranslateError(Exception):
    """A problem with the user's input, files or machine; ``str(err)`` is one line."""
