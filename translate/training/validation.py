"""Validation: teacher-forced loss, greedy translation scored with sacrebleu, tagging scores.

Everything the trainer reports about a model's quality comes from here, so that the
numbers printed during training, logged to W&B and written to the run directory are the
same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from translate.config import InferenceConfig
from translate.data.batching import EncodedSplit, collate
from translate.data.tokenizer import Tokenizer
from translate.runtime import autocast
from translate.search.decoding import decode_ids
from translate.search.domain_choice import DomainChoice
from translate.tracking.dashboard import sample_indices, sentence_rows
from translate.tracking.metrics import (
    bleu_chrf,
    domain_scores,
    multilabel_scores,
    per_label_scores,
    tune_thresholds,
)
from translate.training.loss import TranslationLoss, batch_losses


@dataclass
class ValidationResult:
    metrics: dict[str, float]
    hypotheses: list[str]
    samples: list[dict[str, str]]
    thresholds: list[float] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)
    domain_probs: np.ndarray | None = None  # [N, L] tag probabilities (runs with labels)
    domain_targets: np.ndarray | None = None  # [N, L] gold multi-hot
    # Per domain: {"bleu", "chrf", "n", ...} (signatures as the pooled ones); per label:
    # {"precision", "recall", "f1", "ap", "threshold"}. Empty without labels.
    domains: dict[str, dict] = field(default_factory=dict)
    labels: dict[str, dict] = field(default_factory=dict)


@torch.inference_mode()
def teacher_forced_loss(model, split: EncodedSplit, batches: Sequence[Sequence[int]],
                        loss_fn: TranslationLoss, special: dict[str, int],
                        device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Token-level NLL and perplexity without label smoothing, plus the tagging loss."""
    was_training = model.training
    model.eval()
    nll, ntokens, tag_sum, tag_rows = 0.0, 0, 0.0, 0
    for indices in batches:
        batch = collate(split, indices, special["pad_id"], special["bos_id"],
                        special["eos_id"]).to(device, non_blocking=True)
        with autocast(device, dtype):
            trans, tag = batch_losses(model, batch, loss_fn, None)
        nll += float(trans.nll)
        ntokens += trans.ntokens
        if tag is not None and batch.domain_mask is not None:
            rows = int(batch.domain_mask.sum())
            tag_sum += float(tag) * rows
            tag_rows += rows
    model.train(was_training)
    loss = nll / max(ntokens, 1)
    metrics = {"loss": loss, "ppl": math.exp(min(loss, 50.0))}
    if tag_rows:
        metrics["tag_loss"] = tag_sum / tag_rows
    return metrics


def validate(model, split: EncodedSplit, sources: Sequence[str], references: Sequence[str],
             batches: Sequence[Sequence[int]], loss_fn: TranslationLoss, tok: Tokenizer,
             opts: InferenceConfig, device: torch.device, dtype: torch.dtype,
             num_samples: int = 5, greedy: bool = True,
             thresholds: list[float] | None = None,
             domains: Sequence[Sequence[str]] | None = None,
             label_names: Sequence[str] = ()) -> ValidationResult:
    """Loss + detokenized BLEU/chrF (greedy unless told otherwise) + domain F1/mAP.

    ``thresholds``: None tunes per-label thresholds on this split (validation); a list
    applies fixed ones (test). ``domains`` (each row's labels) adds BLEU/chrF per domain
    (``bleu/<domain>``...) when the rows span two domains or more; ``label_names`` names the
    tagger's outputs for the per-label scores (``f1/<label>``...).
    """
    special = {"pad_id": tok.pad_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id}
    metrics = teacher_forced_loss(model, split, batches, loss_fn, special, device, dtype)
    # A domain-conditioned model decodes with the tagger's prediction, as at inference.
    decoded = decode_ids(model, split.src_ids, opts, special=special, device=device, dtype=dtype,
                         greedy=greedy, domains=DomainChoice.predicted(thresholds))
    hyps = tok.decode_tgt([h[0].tokens if h else [] for h in decoded.hypotheses])
    scores = bleu_chrf(hyps, list(references))
    metrics.update(bleu=scores["bleu"], chrf=scores["chrf"])
    result = ValidationResult(metrics=metrics, hypotheses=hyps, samples=[],
                              signatures={"bleu": scores["bleu_signature"],
                                          "chrf": scores["chrf_signature"]})
    if domains is not None and len({d for row in domains for d in row}) >= 2:
        result.domains = domain_scores(hyps, list(references), domains)
        for name, sc in result.domains.items():
            metrics.update({f"bleu/{name}": sc["bleu"], f"chrf/{name}": sc["chrf"]})
    if decoded.domain_probs is not None and split.n_labels:
        probs = decoded.domain_probs.numpy()
        targets = np.zeros_like(probs)
        for row, labels in enumerate(split.label_ids):
            targets[row, labels] = 1.0
        result.domain_probs, result.domain_targets = probs, targets
        result.thresholds = thresholds or tune_thresholds(probs, targets)
        tag = multilabel_scores(probs, targets, result.thresholds)
        metrics.update({f"tag_{k}": v for k, v in tag.items()})
        result.labels = _label_scores(probs, targets, result.thresholds, label_names)
        for name, sc in result.labels.items():
            metrics.update({f"{k}/{name}": v for k, v in sc.items()})
    # the same rows at every validation, spread over the split: followed across training
    result.samples = sentence_rows(sample_indices(len(hyps), num_samples), sources,
                                   references, hyps)
    return result


def _label_scores(probs: np.ndarray, targets: np.ndarray, thresholds: list[float],
                  names: Sequence[str]) -> dict[str, dict]:
    """Per-label precision/recall/F1/AP at the thresholds in use, for labels that occur."""
    if len(names) != probs.shape[1]:
        return {}
    scores = per_label_scores(probs, targets, thresholds)
    return {name: dict(sc, threshold=th)
            for name, sc, th in zip(names, scores, thresholds, strict=True) if sc is not None}


def breakdown_lines(result: ValidationResult) -> list[str]:
    """The console's per-domain summary: one line per domain, translation and tag scores."""
    names = sorted(set(result.domains) | set(result.labels))
    if not names:
        return []
    width = max(8, *(len(n) for n in names))
    tag_head = "    P     R    F1    AP   th" if result.labels else ""
    lines = [f"  {'domain':<{width}} {'n':>5}  {'BLEU':>5}  {'chrF':>5}" + tag_head]
    for name in names:
        d, t = result.domains.get(name), result.labels.get(name)
        line = (f"  {name:<{width}} {d['n']:>5}  {d['bleu']:5.2f}  {d['chrf']:5.2f}" if d
                else f"  {name:<{width}} {'-':>5}  {'-':>5}  {'-':>5}")
        if t:
            line += (f"  {t['precision']:.2f}  {t['recall']:.2f}  {t['f1']:.2f}  "
                     f"{t['ap']:.2f}  {t['threshold']:.2f}")
        lines.append(line)
    return lines
