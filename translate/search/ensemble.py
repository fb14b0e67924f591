"""Several models as one: the one-step API search uses, over the members' combined step
distributions.

Greedy and beam search (:mod:`translate.search.beam`) talk to a model only through
``encode``, ``tag``, ``condition``, ``init_decoder_state``, ``decode_step`` and the
``index_select`` of what those return; :class:`Ensemble` presents exactly that API, so the
searches (and anything else written against the one-step API) decode an ensemble unchanged.
Members may differ in architecture - layers, sizes, input feeding or the parallel decoder,
int8 or float weights - because each keeps its own encoder output and decoder state; they
must share one target vocabulary (one tokenizer), which the loader checks.

Each step, member ``i`` gives log-probabilities ``lp_i`` over the vocabulary; with weights
``w_i`` (summing to 1) the ensemble's step distribution is, by ``combine``:

* ``logprob`` (the default): ``sum_i w_i lp_i``, renormalised over the vocabulary - the
  weighted geometric mean, a product of experts (Marian's and OpenNMT-py's). It is sharper:
  a token one member finds implausible is pushed down even when another likes it; on
  Multi30k it scored at or above ``prob`` in 8 of 10 comparisons (docs/benchmarks.md).
* ``prob``: ``log sum_i w_i exp(lp_i)``, the log of the weighted mean probability - the
  mixture of the members (fairseq's ensembles). It is already normalised.

Search applies its log-softmax to what :meth:`Ensemble.decode_step` returns, which leaves the
first unchanged and performs the second's renormalisation, so a hypothesis' score is the sum
of the combined, normalised step log-probabilities (with the usual length penalty). An
ensemble of one member returns that member's logits untouched: exactly its outputs and scores.

Domains: the tagging probabilities are the weighted mean over the members that tag (search
reads them through ``sigmoid(tag(enc))``), and :meth:`Ensemble.condition` gives the one
mixture to every conditioned member. Attention is the weighted mean of the members'.

Shortlists: :class:`EnsembleShortlist` decodes a batch over the union of the members'
shortlists; each member's output layer is cut down to that union
(:class:`~translate.search.shortlist.RestrictedModel`), so the combination happens over the
same restricted space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from translate.search.shortlist import RestrictedModel, Shortlist

__all__ = ["COMBINE", "Ensemble", "EnsembleShortlist", "normalised_weights"]

Combine = Literal["prob", "logprob"]
COMBINE: tuple[str, ...] = ("prob", "logprob")


def normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """``weights`` scaled to sum to 1 (None: equal); ValueError names what is wrong."""
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} models; give one per model")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"weights must be positive numbers, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


@dataclass
class EnsembleEncoderOutput:
    """The members' encoder outputs, one per member, moved together."""

    members: tuple

    @property
    def mask(self) -> Tensor:
        """The source mask ``[B, S]`` (one source, so the same for every member)."""
        return self.members[0].mask

    def index_select(self, idx: Tensor) -> EnsembleEncoderOutput:
        return EnsembleEncoderOutput(tuple(e.index_select(idx) for e in self.members))


@dataclass
class EnsembleState:
    """The members' decoder states, one per member, moved together."""

    members: tuple

    def index_select(self, idx: Tensor) -> EnsembleState:
        return EnsembleState(tuple(s.index_select(idx) for s in self.members))


class _Steps:
    """The one-step API over ``self.steps`` (models or restricted views of them)."""

    steps: list
    weights: list[float]
    combine: Combine

    @property
    def conditioned(self) -> bool:
        """Whether any member takes a domain mixture."""
        return any(getattr(m, "conditioned", False) for m in self._models())

    @property
    def n_labels(self) -> int:
        return max((getattr(m, "n_labels", 0) for m in self._models()), default=0)

    def _models(self) -> list:
        return [getattr(m, "model", m) for m in self.steps]  # a RestrictedModel's model

    def forget_step_cache(self) -> None:
        for m in self.steps:
            m.forget_step_cache()

    def encode(self, src: Tensor, src_lengths: Tensor,
               src_mask: Tensor | None = None) -> EnsembleEncoderOutput:
        return EnsembleEncoderOutput(tuple(m.encode(src, src_lengths, src_mask)
                                           for m in self.steps))

    def tag(self, enc: EnsembleEncoderOutput) -> Tensor | None:
        """Domain logits whose sigmoid is the weighted mean of the tagging members'
        probabilities (a lone tagging member's logits unchanged); None when none tags."""
        tagged = [(w, logits) for m, e, w in zip(self._models(), enc.members, self.weights,
                                                 strict=True)
                  if (logits := m.tag(e)) is not None]
        if not tagged:
            return None
        if len(tagged) == 1:
            return tagged[0][1]
        total = sum(w for w, _ in tagged)
        probs = sum(w / total * torch.sigmoid(logits.float()) for w, logits in tagged)
        return torch.logit(probs)

    def condition(self, enc: EnsembleEncoderOutput, weights: Tensor) -> EnsembleEncoderOutput:
        """Every conditioned member gets the mixture; the others are unchanged."""
        return EnsembleEncoderOutput(tuple(m.condition(e, weights) for m, e in
                                           zip(self._models(), enc.members, strict=True)))

    def init_decoder_state(self, enc: EnsembleEncoderOutput) -> EnsembleState:
        return EnsembleState(tuple(m.init_decoder_state(e) for m, e in
                                   zip(self.steps, enc.members, strict=True)))

    def decode_step(self, prev_tokens: Tensor, state: EnsembleState,
                    enc: EnsembleEncoderOutput) -> tuple[Tensor, EnsembleState, Tensor]:
        """prev_tokens ``[N]`` -> (scores ``[N, V]`` whose log-softmax is the ensemble's step
        distribution, the new state, the weighted mean attention ``[N, S]``)."""
        outs = [m.decode_step(prev_tokens, s, e) for m, s, e in
                zip(self.steps, state.members, enc.members, strict=True)]
        new_state = EnsembleState(tuple(o[1] for o in outs))
        if len(outs) == 1:
            return outs[0][0], new_state, outs[0][2]
        attn = sum(w * o[2].float() for w, o in zip(self.weights, outs, strict=True))
        lps = torch.stack([torch.log_softmax(o[0].float(), dim=-1) for o in outs])
        w = lps.new_tensor(self.weights).view(-1, 1, 1)
        if self.combine == "prob":
            scores = torch.logsumexp(lps + w.log(), dim=0)
        else:
            scores = (lps * w).sum(dim=0)
        return scores, new_state, attn


class Ensemble(_Steps, nn.Module):
    """Models decoded as one (see the module's docstring); ``weights`` default to equal."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 combine: Combine = "logprob") -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        if combine not in COMBINE:
            raise ValueError(f"combine: expected one of {', '.join(COMBINE)}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.steps = list(members)
        # The members' mode, not nn.Module's default (training): search restores the mode
        # it found, and would otherwise leave loaded (eval) members in training mode.
        self.training = all(m.training for m in members)
        self.weights = normalised_weights(weights, len(members))
        self.combine = combine

    def restricted(self, ids: Tensor) -> RestrictedEnsemble:
        """The ensemble with every member's output layer cut down to ``ids``."""
        return RestrictedEnsemble(self, [RestrictedModel(m, ids) for m in self.members])


class RestrictedEnsemble(_Steps):
    """An :class:`Ensemble` over a shortlist, as search sees it: positions in the shortlist
    in and out, as :class:`~translate.search.shortlist.RestrictedModel` does for one model."""

    def __init__(self, ensemble: Ensemble, views: list[RestrictedModel]) -> None:
        self.ensemble, self.steps = ensemble, views
        self.weights, self.combine = ensemble.weights, ensemble.combine

    @property
    def training(self) -> bool:
        return self.ensemble.training

    def train(self, mode: bool = True) -> RestrictedEnsemble:
        self.ensemble.train(mode)
        return self

    def eval(self) -> RestrictedEnsemble:
        return self.train(False)

    def special(self, special: dict[str, int]) -> dict[str, int]:
        return self.steps[0].special(special)

    def to_vocab(self, hyps: list[list]) -> list[list]:
        return self.steps[0].to_vocab(hyps)


class EnsembleShortlist:
    """A batch's shortlist for an ensemble: the union of its members' shortlists."""

    def __init__(self, members: Sequence[Shortlist]) -> None:
        self.members = list(members)

    def select(self, src_rows: Sequence[Sequence[int]]) -> Tensor:
        """Sorted target ids (int64, CPU): every id some member's shortlist holds."""
        picked = [s.select(src_rows) for s in self.members]
        return picked[0] if len(picked) == 1 else torch.cat(picked).unique(sorted=True)

    def restrict(self, model: Ensemble, src_rows: Sequence[Sequence[int]],
                 device: torch.device) -> RestrictedEnsemble:
        return model.restricted(self.select(src_rows).to(device))
