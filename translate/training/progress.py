"""Where a run stands, and plain progress lines for runs without a terminal.

tqdm's bar turns itself off when stderr is not a TTY (nohup, CI, batch jobs), which left
such runs silent until their first validation. :class:`ProgressLines` prints what the bar
would have shown, as ordinary lines that read well in a log file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # next batch of this epoch to train on
    best: float | None = None
    bad_validations: int = 0
    elapsed: float = 0.0
    tokens: int = 0
    skipped: int = 0  # optimizer steps skipped for a non-finite loss or gradient


class ProgressLines:
    """A line every ``every`` steps or ``max_seconds``, whichever comes first.

    ``max_steps`` / ``max_minutes`` (0 = none) give the ETA; with neither it is left out.
    ``elapsed`` is the run's training time before this process, so a time limit counts it.
    """

    def __init__(self, write: Callable[[str], None], every: int, max_steps: int = 0,
                 max_minutes: float = 0.0, elapsed: float = 0.0,
                 max_seconds: float = 60.0) -> None:
        self.write, self.every, self.max_seconds = write, every, max_seconds
        self.max_steps, self.max_minutes, self.elapsed = max_steps, max_minutes, elapsed
        self.start = self.last = time.monotonic()
        self.steps = self.tokens = self.first_step = 0

    def update(self, step: int, loss: float, ntokens: int) -> None:
        """Count one finished step; print a line when one is due."""
        now = time.monotonic()
        self.first_step = self.first_step or step
        self.steps, self.tokens = self.steps + 1, self.tokens + ntokens
        if step % self.every and now - self.last < self.max_seconds:
            return
        rate = self.tokens / max(now - self.last, 1e-9)
        line = f"step {step}" + (f"/{self.max_steps}" if self.max_steps else "")
        line += f": loss {loss:.3f}, {rate:,.0f} tokens/s"
        eta = self._eta(step, now)
        if eta is not None:
            line += f", ETA {_clock(eta)}"
        self.write(line)
        self.last, self.steps, self.tokens = now, 0, 0

    def _eta(self, step: int, now: float) -> float | None:
        """Seconds to the nearest known limit, at this process's average step rate."""
        ran = now - self.start
        etas = []
        if self.max_steps:
            per_step = ran / max(step - self.first_step + 1, 1)
            etas.append(max(self.max_steps - step, 0) * per_step)
        if self.max_minutes:
            etas.append(max(self.max_minutes * 60 - self.elapsed - ran, 0.0))
        return min(etas) if etas else None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
