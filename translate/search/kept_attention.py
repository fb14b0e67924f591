"""The attention of the sentences of a running batch that ask for it.

:class:`~translate.search.continuous.ContinuousSearch` keeps no attention for a sentence that
does not ask (a plain request pays nothing for it, and a batch where none asks runs no extra
operation at all). For one that does, it keeps what :func:`~translate.search.beam.greedy_search`
and :func:`~translate.search.beam.beam_search` keep with ``attention=True``, at the sentence's
own step count: each step's weights of its rows, and for beam search the back-pointers (which
beam of the previous step each row continues) and which beam chose eos for each finished
hypothesis. A beam hypothesis' attention is walked back from the row that chose its eos, so
it is the attention of its own history, never that of the beam that later took its slot;
:attr:`~translate.search.beam.Hypothesis.attention` is then what the sentence alone gets
(to float rounding, as its scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from translate.search.ops import backtrack_attention, hypothesis_attention

__all__ = ["KeptAttention"]


@dataclass(eq=False)
class _Trail:
    """One asking sentence's history: per step, the step's kept weights and where this
    sentence's rows start in them; (beam) per step, the kept back-pointers and this
    sentence's row in them."""

    src_len: int
    weights: list[tuple[Tensor, int]] = field(default_factory=list)
    parents: list[tuple[Tensor, int]] = field(default_factory=list)


class KeptAttention:
    """The asking sentences of a running batch with ``width`` rows per sentence (1: greedy;
    ``k``: beam search with ``2k + 1`` finished slots per sentence), in batch order."""

    def __init__(self, width: int, beam: bool, device: torch.device) -> None:
        self.width, self.beam_search, self.device = width, beam, device
        self.asks: list[bool] = []  # per sentence of the batch
        self.trails: list[_Trail] = []  # the asking sentences', in batch order
        self.fin_beam: Tensor | None = None  # beam: [asking, 2k + 1] the beam that chose eos
        self._where: Tensor | None = None  # the asking sentences' batch positions
        self._rows: Tensor | None = None  # and their rows

    def __bool__(self) -> bool:
        """Whether some sentence of the batch asks."""
        return bool(self.trails)

    # ------------------------------------------------------------------ the batch changes

    def add(self, asks: Sequence[bool], src_lens: Sequence[int]) -> None:
        """Sentences joining (after those already there), with their source lengths."""
        self.asks += list(asks)
        new = [_Trail(n) for n, ask in zip(src_lens, asks, strict=True) if ask]
        if not new:
            return
        self.trails += new
        if self.beam_search:
            rows = torch.zeros((len(new), 2 * self.width + 1), dtype=torch.long,
                               device=self.device)
            self.fin_beam = rows if self.fin_beam is None else torch.cat([self.fin_beam, rows])
        self._where = self._rows = None

    def keep(self, kept: list[int]) -> None:
        """Only the sentences ``kept`` (batch positions) stay."""
        if not self.trails:  # none asks: only the count changes
            del self.asks[len(kept):]
            return
        index = self._index()
        stay = [index[i] for i in kept if self.asks[i]]
        self.asks = [self.asks[i] for i in kept]
        if len(stay) != len(self.trails):
            self.trails = [self.trails[a] for a in stay]
            if self.fin_beam is not None:
                self.fin_beam = (self.fin_beam[torch.tensor(stay, dtype=torch.long,
                                                            device=self.device)]
                                 if stay else None)
        self._where = self._rows = None

    def _index(self) -> dict[int, int]:
        """Batch position -> index among the asking sentences."""
        return {i: a for a, i in enumerate(i for i, ask in enumerate(self.asks) if ask)}

    def _positions(self) -> tuple[Tensor, Tensor]:
        """The asking sentences' batch positions and rows (``width`` each), on the device."""
        if self._where is None:
            where = [i for i, ask in enumerate(self.asks) if ask]
            k = self.width
            self._where = torch.tensor(where, dtype=torch.long, device=self.device)
            self._rows = torch.tensor([i * k + j for i in where for j in range(k)],
                                      dtype=torch.long, device=self.device)
        return self._where, self._rows

    # ------------------------------------------------------------------ a step

    def record(self, weights: Tensor) -> None:
        """The step's attention ``[rows, S]`` (float32) of the whole batch."""
        kept = weights.index_select(0, self._positions()[1])
        k = self.width
        for a, trail in enumerate(self.trails):
            trail.weights.append((kept, a * k))

    def finalise(self, slots: Tensor, beams: Tensor) -> None:
        """Beam: the top-k candidates' finished slots ``[B, k]`` (the trash slot for those
        not finished) and the beams ``[B, k]`` they came from."""
        where = self._positions()[0]
        asking = torch.arange(where.numel(), device=self.device).unsqueeze(1)
        self.fin_beam[asking.expand(-1, self.width), slots.index_select(0, where)] = \
            beams.index_select(0, where)

    def continued(self, beams: Tensor) -> None:
        """Beam: which beam ``[B, k]`` each row of the next step continues."""
        kept = beams.index_select(0, self._positions()[0])
        for a, trail in enumerate(self.trails):
            trail.parents.append((kept, a))

    # ------------------------------------------------------------------ results

    def greedy(self, i: int) -> Tensor | None:
        """Sentence ``i``'s attention ``[steps + 1, src_len]`` (None: it did not ask)."""
        if not self.asks[i]:
            return None
        trail = self.trails[self._index()[i]]
        return torch.stack([w[r, :trail.src_len] for w, r in trail.weights]).cpu()

    def beam(self, i: int, slots: Sequence[int], ends: Sequence[int]) -> list[Tensor | None]:
        """Sentence ``i``'s hypotheses in finished ``slots``, which chose eos at steps
        ``ends``: each one's attention ``[end + 1, src_len]``, walked back from its eos."""
        if not self.asks[i]:
            return [None] * len(slots)
        a = self._index()[i]
        trail, k = self.trails[a], self.width
        steps = [w[r:r + k, :trail.src_len] for w, r in trail.weights]  # widths vary
        parents = [p[j] for p, j in trail.parents]
        rows = self.fin_beam[a, torch.tensor(list(slots), dtype=torch.long, device=self.device)]
        attn = backtrack_attention(steps, parents, rows,
                                   torch.tensor(list(ends), dtype=torch.long, device=self.device))
        return [hypothesis_attention(attn, h, end + 1, trail.src_len).cpu()
                for h, end in enumerate(ends)]

    def empty(self, i: int) -> Tensor | None:
        """The attention of an empty output of sentence ``i`` (every continuation banned)."""
        return torch.zeros(0, self.trails[self._index()[i]].src_len) if self.asks[i] else None
