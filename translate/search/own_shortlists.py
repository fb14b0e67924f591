"""Every sentence of a running batch decoded over its own vocabulary shortlist.

A static batch is decoded over the union of its sentences' shortlists
(:mod:`translate.search.shortlist`), so which sentences share a batch changes the scores a
sentence is searched with. In continuous batching (:mod:`translate.search.continuous`) the
batch changes at every step, so each sentence keeps its own shortlist, the one it would have
alone: the model's output layer is cut down to the union over the running batch, and each
row's logits are masked to its sentence's shortlist before the log-softmax, which is then the
log-softmax over that shortlist alone. The outputs are those of each sentence translated
alone with the shortlist on (scores to float rounding).

The union only grows while sentences join; it is cut back (a new restricted output layer)
once it holds half again as many pieces as the running batch needs, so the layer is not
rebuilt at every step of a busy batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from translate.search.shortlist import RestrictedModel

__all__ = ["OwnShortlists"]

SLACK = 1.5  # the union is rebuilt once it is this many times what the batch needs


class OwnShortlists:
    """Per-sentence shortlists of a running batch, in batch order (see the module docstring).

    ``shortlist``: a :class:`~translate.search.shortlist.Shortlist` (or an ensemble's), whose
    ``select([ids])`` is a sentence's shortlist; ``vocab_size``: the target vocabulary's.
    """

    def __init__(self, model: nn.Module, shortlist, special: dict[str, int], vocab_size: int,
                 device: torch.device) -> None:
        self.model, self.shortlist, self.device = model, shortlist, device
        self.special = special
        self.owns: list[Tensor] = []  # each sentence's shortlist (sorted vocabulary ids, CPU)
        self.counts = torch.zeros(vocab_size, dtype=torch.long)  # sentences needing each id
        self.vocab: Tensor | None = None  # the union's ids (sorted, on the device)
        self.inverse = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
        self.view = None
        self.allowed: Tensor | None = None  # [sentences, len(vocab)]: a sentence's own ids
        self.positions: dict[str, int] = {}  # bos_id, eos_id, pad_id in the union
        self._stale = True
        # The rows' mask, kept until the batch changes (None: every row may use the whole
        # union, as a sentence alone does, so there is nothing to mask).
        self._blocked: tuple[Tensor | None] | None = None

    # ------------------------------------------------------------------ the batch changes

    def add(self, src_rows: list[list[int]]) -> None:
        """Sentences joining (after those already there)."""
        owns = [self.shortlist.select([ids]) for ids in src_rows]
        for own in owns:
            self.counts[own] += 1
        self.owns += owns
        if self.vocab is None or any(bool((self.inverse[own.to(self.device)] < 0).any())
                                     for own in owns):
            self._stale = True
        elif not self._stale:
            self.allowed = torch.cat([self.allowed, self._rows(owns)])
        self._blocked = None

    def keep(self, kept: list[int]) -> None:
        """Only the sentences ``kept`` (batch positions) stay."""
        self._blocked = None
        kept_set = set(kept)
        for i, own in enumerate(self.owns):
            if i not in kept_set:
                self.counts[own] -= 1
        self.owns = [self.owns[i] for i in kept]
        if not self.owns:
            self.vocab, self.view, self.allowed, self._stale = None, None, None, True
            return
        if not self._stale:
            self.allowed = self.allowed[torch.tensor(kept, dtype=torch.long,
                                                     device=self.device)]
            if self.vocab.numel() > SLACK * int((self.counts > 0).sum()):
                self._stale = True

    def _rows(self, owns: list[Tensor]) -> Tensor:
        """``[len(owns), len(vocab)]``: which union positions each of ``owns`` holds."""
        rows = torch.zeros((len(owns), self.vocab.numel()), dtype=torch.bool,
                           device=self.device)
        for i, own in enumerate(owns):
            rows[i, self.inverse[own.to(self.device)]] = True
        return rows

    def _rebuild(self) -> None:
        """The union of what the batch needs, its restricted output layer and masks."""
        self.inverse.fill_(-1)
        self.vocab = (self.counts > 0).nonzero().view(-1).to(self.device)
        self.inverse[self.vocab] = torch.arange(self.vocab.numel(), device=self.device)
        restricted = getattr(self.model, "restricted", None)  # an ensemble's own view
        self.view = (restricted(self.vocab) if restricted is not None
                     else RestrictedModel(self.model, self.vocab))
        self.positions = self.view.special(self.special)
        self.allowed = self._rows(self.owns)
        self._stale = False
        self._blocked = None

    # ------------------------------------------------------------------ a step

    def log_probs(self, prev: Tensor, state, enc, width: int,
                  attn_out: list[Tensor] | None = None) -> tuple[Tensor, object]:
        """Float32 log-probs ``[rows, len(vocab)]`` (union positions) of the next token,
        each row over its sentence's shortlist, and the new decoder state; ``prev`` in
        vocabulary ids, ``width`` rows per sentence. ``attn_out``: as for
        :func:`translate.search.beam._log_probs`."""
        if self._stale:
            self._rebuild()
        logits, state, weights = self.view.decode_step(self.inverse[prev], state, enc)
        if attn_out is not None:
            attn_out.append(weights.float())
        logits = logits.float()
        blocked = self._mask(width)
        if blocked is not None:
            logits.masked_fill_(blocked, -math.inf)
        if logits.device.type == "cpu":  # in place, as translate.search.beam._log_probs
            return torch.log_softmax(logits, dim=-1, out=logits), state
        return torch.log_softmax(logits, dim=-1), state

    def _mask(self, width: int) -> Tensor | None:
        """``[rows, len(vocab)]``: where a row's sentence may not go; None when no row is
        restricted (one sentence alone, or sentences with the same shortlist)."""
        if self._blocked is None:
            blocked = None
            if not bool(self.allowed.all()):
                blocked = ~self.allowed
                if width > 1:
                    blocked = blocked.repeat_interleave(width, dim=0)
            self._blocked = (blocked,)
        return self._blocked[0]

    def to_vocab(self, positions: Tensor) -> Tensor:
        return self.vocab[positions]

    def to_positions(self, ids: Tensor) -> Tensor:
        return self.inverse[ids]
