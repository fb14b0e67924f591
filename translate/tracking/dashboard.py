"""What the W&B dashboard shows beyond scalars, computed without W&B.

Pure functions over translations and tag probabilities: which validation sentences to follow
across training, each sentence's chrF, the test set's worst and best sentences, precision-
recall points per label and the predicted-against-gold domain pairs. Keeping them apart from
:mod:`translate.tracking.wandb_run` means they are tested on real numbers whether or not W&B runs,
and the W&B wrapper only turns their rows into tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import CHRF

SENTENCE_COLUMNS = ("index", "source", "reference", "hypothesis", "chrf")


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` row numbers spread evenly over ``n`` rows, the same at every validation.

    Spread rather than the first ``k``: validation sets are concatenated source by source,
    so the first rows would all come from one corpus (one domain).
    """
    if n <= 0 or k <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({(i * n) // k for i in range(k)})


def sentence_chrf(hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Sentence-level chrF (sacrebleu's defaults, as the corpus score), rounded to 2 digits."""
    if len(hyps) != len(refs):
        raise ValueError(f"sentence_chrf: {len(hyps)} hypotheses but {len(refs)} references")
    chrf = CHRF()
    return [round(float(chrf.sentence_score(h, [r]).score), 2)
            for h, r in zip(hyps, refs, strict=True)]


def sentence_rows(indices: Sequence[int], sources: Sequence[str], refs: Sequence[str],
                  hyps: Sequence[str]) -> list[dict]:
    """One row per index: index, source, reference, hypothesis and sentence chrF."""
    scores = sentence_chrf([hyps[i] for i in indices], [refs[i] for i in indices])
    return [{"index": int(i), "source": sources[i], "reference": refs[i],
             "hypothesis": hyps[i], "chrf": s} for i, s in zip(indices, scores, strict=True)]


def extremes(sources: Sequence[str], refs: Sequence[str], hyps: Sequence[str],
             k: int) -> tuple[list[dict], list[dict]]:
    """The ``k`` worst and ``k`` best sentences by chrF (worst first, best first).

    Ties keep corpus order, so the tables are the same on every run of the same weights.
    """
    rows = sentence_rows(range(len(hyps)), sources, refs, hyps)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["chrf"], i))
    k = min(k, len(rows))
    worst = [rows[i] for i in order[:k]]
    best = [rows[i] for i in sorted(order, key=lambda i: (-rows[i]["chrf"], i))[:k]]
    return worst, best


def pr_points(scores: np.ndarray, positives: np.ndarray, max_points: int = 50) -> list[tuple]:
    """(threshold, precision, recall) along one label's precision-recall curve.

    Every distinct score is a threshold (predict positive when ``score >= threshold``); the
    curve is thinned to about ``max_points`` thresholds, always keeping both ends, so a
    large validation set does not turn into a table of thousands of rows per label. A label
    without positives has no recall and no curve (empty list).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives) > 0.5
    n_pos = int(positives.sum())
    if n_pos == 0 or scores.size == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positives[order]
    tp, fp = np.cumsum(p), np.cumsum(~p)
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last row of each distinct score
    if last.size > max_points:
        keep = np.unique(np.linspace(0, last.size - 1, max_points).round().astype(int))
        last = last[keep]
    return [(round(float(s[i]), 4), round(float(tp[i] / (tp[i] + fp[i])), 4),
             round(float(tp[i] / n_pos), 4)) for i in last]


def pr_rows(probs: np.ndarray, targets: np.ndarray, labels: Sequence[str]) -> list[list]:
    """Rows ``[label, threshold, precision, recall]`` for every label with gold positives;
    only rows with at least one gold label count (as in :mod:`translate.tracking.metrics`)."""
    probs, targets = np.asarray(probs), np.asarray(targets) > 0.5
    labelled = targets.any(axis=1)
    rows = []
    for j, label in enumerate(labels):
        for t, prec, rec in pr_points(probs[labelled, j], targets[labelled, j]):
            rows.append([str(label), t, prec, rec])
    return rows


def confusion_pairs(probs: np.ndarray, targets: np.ndarray) -> tuple[list[int], list[int]]:
    """(gold, predicted) label numbers for rows with exactly one gold label.

    The prediction is the most probable label (argmax), whatever the tuned thresholds say:
    the question is "which domain does the model think this is". Rows with several gold
    labels have no single right answer and rows without one no answer at all; both are left
    out.
    """
    probs, targets = np.asarray(probs), np.asarray(targets) > 0.5
    single = targets.sum(axis=1) == 1
    gold = targets[single].argmax(axis=1)
    pred = probs[single].argmax(axis=1)
    return [int(g) for g in gold], [int(p) for p in pred]


def confusion_rows(gold: Sequence[int], pred: Sequence[int],
                   labels: Sequence[str]) -> list[list]:
    """``[gold label, predicted label, count]`` for every pair of labels (zeros included)."""
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, pred, strict=True):
        counts[g, p] += 1
    return [[str(labels[g]), str(labels[p]), int(counts[g, p])]
            for g in range(len(labels)) for p in range(len(labels))]
