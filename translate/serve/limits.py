"""What one request may ask for, and the one-line errors when it asks for more.

Every limit has a default that a laptop and a small server both survive, and a command-line
flag (``python -m translate.serve --help``). A request over a limit is answered 413 with one
line naming the limit and its flag; malformed input is a 400 naming the field (and the item and
position inside it); neither ever reaches the model's worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from translate.errors import TranslateError

__all__ = ["Limits", "RequestError", "check_text"]


@dataclass(frozen=True)
class Limits:
    """Service limits and batching settings (see ``--help`` for each flag)."""

    max_body_bytes: int = 1_000_000
    max_sentences: int = 256  # items per request (``q`` items or ``sentences``)
    max_chars: int = 5_000  # characters per item
    max_queue: int = 4_096  # sentences waiting for the worker; more: 503
    timeout: float = 60.0  # seconds from arrival to answer; later: 504
    max_batch_tokens: int = 4_096  # source pieces in a model's running batch

    def check(self) -> None:
        """Refuse settings that cannot work, naming the flag."""
        ints = {"--max-body-bytes": self.max_body_bytes, "--max-sentences": self.max_sentences,
                "--max-chars": self.max_chars, "--max-queue": self.max_queue,
                "--max-batch-tokens": self.max_batch_tokens}
        for flag, value in ints.items():
            if value < 1:
                raise ValueError(f"{flag}: expected at least 1, got {value}")
        if self.timeout <= 0:
            raise ValueError(f"--timeout: expected more than 0 seconds, got {self.timeout}")
        if self.max_queue < self.max_sentences:
            raise ValueError(f"--max-queue ({self.max_queue}) is below --max-sentences "
                             f"({self.max_sentences}): a full-size request could never be queued")


class RequestError(TranslateError):
    """A request the service refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# C0 controls other than tab, line feed and carriage return; DEL; C1 controls. Such characters
# are not text a person wrote (a binary file pasted in, a mangled encoding), and sentencepiece
# maps them to unknown pieces: refused in one line rather than translated into noise.
_CONTROL = {c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)} | {0x7F} | set(
    range(0x80, 0xA0))
_LINE_BREAKS = {0x0A, 0x0D}


def check_text(text: object, where: str, limits: Limits, *, line_breaks: bool) -> str:
    """``text`` as a checked string, or a :class:`RequestError` naming ``where``.

    ``line_breaks``: whether ``\\n`` / ``\\r`` may appear (the LibreTranslate API translates
    each line of a text; ``/v1`` takes one sentence per item, as ``infer`` takes one per line).
    """
    if not isinstance(text, str):
        raise RequestError(400, f"{where}: expected a string, got {_json_type(text)}")
    if len(text) > limits.max_chars:
        raise RequestError(413, f"{where}: {len(text)} characters exceed the limit of "
                                f"{limits.max_chars} per item (--max-chars)")
    for pos, char in enumerate(text):
        code = ord(char)
        if code in _CONTROL or (not line_breaks and code in _LINE_BREAKS):
            what = "line break" if code in _LINE_BREAKS else "control character"
            hint = "; send one sentence per item" if code in _LINE_BREAKS else ""
            raise RequestError(400, f"{where}: {what} U+{code:04X} at character {pos}{hint}")
        if 0xD800 <= code <= 0xDFFF:
            raise RequestError(400, f"{where}: lone surrogate U+{code:04X} at character {pos} "
                                    "(not valid Unicode)")
    return text


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
