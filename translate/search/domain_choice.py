"""Which domain a conditioned model is told at inference: predicted, forced, or none.

A domain-conditioned model (:mod:`translate.model.conditioning`) decodes each sentence with
a mixture of label embeddings, weighted by one row of label weights. This module decides
those rows; it holds no model code and reads no files.

* ``predicted`` (the default): the tagger's own prediction, *thresholded* with the per-label
  thresholds tuned on validation, then normalised: the labels that pass share the weight
  equally, and a sentence where none passes gets zeros ("unknown domain"). Why not the raw
  sigmoid probabilities: training only ever feeds normalised multi-hot rows (the gold
  labels) or zeros (label dropout), so thresholded rows are inputs the model was trained
  on, while raw probabilities (rows summing to 0.3 or 2.4, blends of unrelated domains)
  are not; and the thresholds are the ones tuned for the tagger's F1, so the labels that
  steer a translation are the labels ``--format jsonl`` reports as the sentence's domains.
* ``forced``: the same labels for every sentence (``--domain LABEL``, repeatable), as a
  normalised multi-hot row.
* ``none``: zeros for every sentence (``--domain none``): conditioning switched off.
* ``given``: one row per sentence from the caller (e.g. gold labels, for evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from translate.config import ConfigError

__all__ = ["DomainChoice", "choose", "normalise"]

NONE = "none"


def normalise(multi_hot: Tensor) -> Tensor:
    """Rows scaled to sum to 1 (all-zero rows stay zero)."""
    multi_hot = multi_hot.float()
    return multi_hot / multi_hot.sum(dim=-1, keepdim=True).clamp(min=1.0)


@dataclass(frozen=True)
class DomainChoice:
    """How decoding picks each sentence's label weights; build it with the class methods."""

    mode: Literal["predicted", "forced", "none", "given"]
    thresholds: tuple[float, ...] = ()  # predicted; empty = 0.5 for every label
    row: tuple[float, ...] = ()  # forced: the one weight row
    rows: Tensor | None = None  # given: [N, L], one row per input sentence

    @classmethod
    def predicted(cls, thresholds: Sequence[float] | None = None) -> DomainChoice:
        return cls("predicted", thresholds=tuple(thresholds or ()))

    @classmethod
    def off(cls) -> DomainChoice:
        return cls("none")

    @classmethod
    def given(cls, rows: Tensor) -> DomainChoice:
        return cls("given", rows=normalise(rows).cpu())

    @classmethod
    def from_names(cls, names: Sequence[str] | str, labels: Sequence[str],
                   thresholds: Sequence[float] = ()) -> DomainChoice:
        """``--domain`` values: label names (forced), ``none`` (off), nothing (predicted).

        An unknown label is a one-line error naming the labels the model knows.
        """
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            return cls.predicted(thresholds)
        if NONE in names:
            if len(names) > 1:
                raise ConfigError(f"--domain {NONE} cannot be combined with labels "
                                  f"({', '.join(n for n in names if n != NONE)})")
            return cls.off()
        unknown = [n for n in names if n not in labels]
        if unknown:
            raise ConfigError(f"--domain {unknown[0]}: unknown label; this model knows "
                              f"{', '.join(labels) or 'no labels'} (or {NONE})")
        row = torch.zeros(len(labels))
        row[[labels.index(n) for n in names]] = 1.0
        return cls("forced", row=tuple(normalise(row.unsqueeze(0))[0].tolist()))

    def weights(self, rows: Sequence[int], probs: Tensor | None, n_labels: int) -> Tensor:
        """Label weights ``[len(rows), n_labels]`` (float32, CPU) for the sentences ``rows``
        of the input; ``probs`` are their tagger probabilities (needed by ``predicted``)."""
        n = len(rows)
        if self.mode == "none":
            return torch.zeros(n, n_labels)
        if self.mode == "forced":
            return torch.tensor(self.row).expand(n, -1).clone()
        if self.mode == "given":
            return self.rows[torch.as_tensor(list(rows), dtype=torch.long)].float()
        if probs is None:
            raise ValueError("predicted domain weights need the tagger's probabilities")
        probs = probs.float().cpu()
        limits = torch.tensor(self.thresholds) if self.thresholds else torch.full((n_labels,),
                                                                                  0.5)
        return normalise(probs >= limits)


def choose(domains: Sequence[str] | str | None, labels: Sequence[str],
           thresholds: Sequence[float], conditioned: bool) -> DomainChoice | None:
    """The :class:`DomainChoice` for a translator's ``domains`` argument (``--domain``):
    None or ``[]`` predicted, ``none`` off, label names forced. None for a model without
    conditioning, which refuses labels in one line (``none`` is what it does anyway)."""
    if conditioned:
        return DomainChoice.from_names(domains or [], labels, thresholds)
    names = [domains] if isinstance(domains, str) else list(domains or [])
    if any(n != NONE for n in names):
        raise ConfigError(f"--domain {names[0]}: this model was trained without domain "
                          "conditioning (model.domain_conditioning.enabled: false)")
    return None
