"""How the benchmarks score a domain tagger: targets, F1 at thresholds, the confusion table.

Shared by ``bench/domains.py`` (the model's head) and ``bench/tagger_ceiling.py`` (a
dedicated classifier on the same data), so their figures are computed the same way.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def multi_hot(gold: list[list[str]], labels: list[str]) -> np.ndarray:
    """``[rows, labels]`` targets: 1.0 where a row carries the label."""
    return np.array([[float(lab in g) for lab in labels] for g in gold])


def f1_scores(scores: np.ndarray, targets: np.ndarray, thresholds, labels: list[str],
              ranking: bool = False) -> dict:
    """Micro/macro-F1 and per-label F1 of ``scores`` at ``thresholds`` (rounded to 4);
    ``ranking``: also mAP and the row count (meaningful only for real scores, not for a
    thresholded 0/1 matrix)."""
    from translate.tracking.metrics import multilabel_scores, per_label_scores

    pooled = multilabel_scores(scores, targets, thresholds)
    per = per_label_scores(scores, targets, thresholds)
    out = {"micro_f1": round(pooled["micro_f1"], 4), "macro_f1": round(pooled["macro_f1"], 4)}
    if ranking:
        out.update(mAP=round(pooled["mAP"], 4), rows=pooled["rows"])
    out["f1"] = {lab: round(p["f1"], 4) for lab, p in zip(labels, per, strict=True) if p}
    return out


def confusion(predicted: list[list[str]], gold: list[list[str]]) -> dict:
    """For each gold label, how often each label was predicted (``(none)``: no label)."""
    table: dict[str, Counter] = {}
    for p, g in zip(predicted, gold, strict=True):
        for lab in g:
            table.setdefault(lab, Counter()).update(sorted(p) or ["(none)"])
    return {lab: dict(sorted(c.items())) for lab, c in sorted(table.items())}
