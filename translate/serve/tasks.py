"""What passes between the service and the worker that owns a model, and a request's life
inside the worker.

The messages (:class:`Request` in; :class:`Update` with :class:`Reply` answers out) are plain
picklable data, so the worker can run in a thread or in a process of its own
(:mod:`translate.serve.process`). A :class:`Task` is a request inside the worker: its texts
cut into the model's inputs as ``Translator.translate`` cuts them (empty lines answered
without the model, long ones split into pieces that fit), each piece's hypotheses as they
finish, and at the end the translations, assembled by ``Translator.assemble`` as
``Translator.translate`` assembles them (n-best, domain tags, conditioning, warnings for
split inputs, and with ``Options.attention`` the attention ``translate(..., attention=True)``
gives).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from translate.inference.translator import Translation, Translator
from translate.search.attention_view import attach_attention
from translate.search.beam import Hypothesis
from translate.search.domain_choice import DomainChoice, choose

__all__ = ["Options", "Reply", "Request", "Task", "Update"]


@dataclass(frozen=True)
class Options:
    """What a request may choose about its decoding."""

    n_best: int = 1
    domains: tuple[str, ...] | None = None  # None: the tagger's prediction
    attention: bool = False  # fill each Translation's attention (HTML places tags by it)


@dataclass
class Request:
    """One request's texts for the worker; ``deadline`` on :func:`time.monotonic`'s clock
    (system-wide, so a worker process reads it too)."""

    id: int
    texts: list[str]
    options: Options
    deadline: float


@dataclass
class Reply:
    """A request's translations, or why there are none: ``expired`` (its deadline passed
    or its client left before it was done) or ``failed`` (the message says why). For the
    per-request log line: when its first piece joined the batch and when it was done
    (:func:`time.monotonic`), and the decoding steps between."""

    id: int
    results: list[Translation] | None = None
    expired: bool = False
    failed: str | None = None
    started: float = 0.0
    finished: float = 0.0
    steps: int = 0


@dataclass
class Update:
    """What the loop tells its owner after a step: which requests started decoding (they
    left the queue), which are answered, and each decoding step's batch size and seconds."""

    taken: list[int] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    steps: list[tuple[int, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.taken or self.replies or self.steps)


@dataclass(eq=False)
class Task:
    """A request inside the worker: its prepared results and its pieces' hypotheses."""

    request: Request
    results: list[Translation]
    segments: list[list[int]]
    owners: list[tuple[int, int]]
    choice: DomainChoice | None
    hypotheses: list[list[Hypothesis] | None]
    probs: list[torch.Tensor | None]
    mixes: list[torch.Tensor | None]
    left: int
    taken: bool = False
    dead: bool = False
    started: float = 0.0  # when its first piece joined the batch
    first_step: int = 0  # the worker's step count then

    @classmethod
    def prepare(cls, translator: Translator, request: Request, conditioned: bool,
                scores_over: str) -> Task:
        """The request's pieces; a bad domain raises ConfigError (the service checks first).
        ``scores_over``: ``vocabulary`` or ``shortlist``, as the worker decodes."""
        t = translator
        choice = choose(list(request.options.domains) if request.options.domains else None,
                        t.labels, t.thresholds, conditioned)
        results = [Translation(text="", score=None, scores_over=scores_over,
                               conditioned_by=choice.mode if choice else None)
                   for _ in request.texts]

        def warn(i: int, message: str) -> None:
            results[i].warnings.append(message)

        segments, owners = t._segments(request.texts, warn)
        n = len(segments)
        return cls(request, results, segments, owners, choice, [None] * n, [None] * n,
                   [None] * n, n)

    def translations(self, translator: Translator) -> list[Translation]:
        """The request's translations, assembled as ``Translator.translate`` assembles them."""
        options = self.request.options
        translator.assemble(self.results, self.owners, self.hypotheses, _stack(self.probs),
                            _stack(self.mixes), options.n_best)
        if options.attention:
            attach_attention(self.results, self.owners, self.hypotheses, self.segments,
                             translator.tokenizer, options.n_best)
        return self.results


def _stack(rows: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if not rows or rows[0] is None else torch.stack(rows)
