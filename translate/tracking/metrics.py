"""Evaluation metrics: corpus BLEU/chrF for translations, F1/mAP for multilabel domain tags.

Translation scores go through sacrebleu's metric objects on detokenized strings and always
come with their signatures, so a number in a log can be reproduced exactly. The multilabel
metrics are small numpy implementations (no sklearn dependency); rows without any gold label
are left out of every multilabel score, matching the tagging loss, which ignores them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

__all__ = ["average_precision", "bleu_chrf", "domain_scores", "multilabel_scores",
           "per_label_scores", "tune_thresholds"]

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05..0.95


def bleu_chrf(hyps: Sequence[str], refs: Sequence[str], digits: int = 2) -> dict:
    """Corpus BLEU and chrF of detokenized ``hyps`` against one reference each.

    Returns ``{"bleu", "chrf", "bleu_signature", "chrf_signature"}``. Empty input scores 0
    (sacrebleu itself fails on an empty corpus); the signatures are still reported.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"bleu_chrf: {len(hyps)} hypotheses but {len(refs)} references")
    # force=True only silences the "forgot to detokenize?" heuristic, which fires on an
    # undertrained model's " ." endings; the input is detokenized text and the score and
    # signature are unchanged.
    bleu, chrf = BLEU(force=True), CHRF()
    if hyps:
        bleu_score = bleu.corpus_score(list(hyps), [list(refs)]).score
        chrf_score = chrf.corpus_score(list(hyps), [list(refs)]).score
    else:
        # A signature needs the number of references, which sacrebleu learns from a call.
        bleu.corpus_score([""], [[""]])
        chrf.corpus_score([""], [[""]])
        bleu_score = chrf_score = 0.0
    return {
        "bleu": round(float(bleu_score), digits),
        "chrf": round(float(chrf_score), digits),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def domain_scores(hyps: Sequence[str], refs: Sequence[str],
                  domains: Sequence[Sequence[str]]) -> dict[str, dict]:
    """:func:`bleu_chrf` of each domain on the rows carrying its label, plus ``n`` (rows).

    A row with several labels counts in each of its domains; unlabelled rows in none.
    """
    out = {}
    for label in sorted({d for row in domains for d in row}):
        rows = [i for i, row in enumerate(domains) if label in row]
        out[label] = bleu_chrf([hyps[i] for i in rows], [refs[i] for i in rows])
        out[label]["n"] = len(rows)
    return out


# --------------------------------------------------------------------------- multilabel


def _as_arrays(probs, targets) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets)
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"probs and targets must both be [N, L], got {p.shape} and {t.shape}")
    t = t > 0.5
    labelled = t.any(axis=1)  # only rows with at least one gold label count
    return p[labelled], t[labelled]


def _thresholds(thresholds, n_labels: int) -> np.ndarray:
    th = np.asarray(thresholds, dtype=np.float64)
    if th.ndim == 0:
        return np.full(n_labels, float(th))
    if th.shape != (n_labels,):
        raise ValueError(f"expected one threshold or {n_labels}, got {th.shape[0]}")
    return th


def _f1(tp, fp, fn):
    """F1 = 2tp / (2tp + fp + fn), 0 where the denominator is 0; works on arrays."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the step precision-recall curve: sum over thresholds of ΔRecall × Precision.

    Tied scores form a single threshold (the sklearn definition), so the value does not
    depend on the order of tied rows. NaN when there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    n_pos = positives.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positives[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_scores(probs, targets, thresholds=0.5) -> dict:
    """Micro F1, macro F1 and mean average precision of domain-tag probabilities.

    ``probs`` / ``targets`` are ``[N, L]``; a label is predicted when ``prob >= threshold``
    (one threshold for all labels or one per label). Rows with no gold label are ignored.
    Macro F1 and mAP average over labels that occur in the gold rows (a label that never
    occurs has no meaningful recall or AP). Returns plain floats plus ``rows`` (rows scored).
    """
    p, t = _as_arrays(probs, targets)
    n_rows, n_labels = t.shape
    if n_rows == 0:
        return {"micro_f1": 0.0, "macro_f1": 0.0, "mAP": 0.0, "rows": 0}
    pred = p >= _thresholds(thresholds, n_labels)
    tp = (pred & t).sum(axis=0)
    fp = (pred & ~t).sum(axis=0)
    fn = (~pred & t).sum(axis=0)
    occurs = t.any(axis=0)
    per_label_f1 = _f1(tp, fp, fn)
    aps = [average_precision(p[:, j], t[:, j]) for j in np.nonzero(occurs)[0]]
    return {
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(per_label_f1[occurs].mean()),
        "mAP": float(np.mean(aps)),
        "rows": int(n_rows),
    }


def per_label_scores(probs, targets, thresholds=0.5) -> list[dict | None]:
    """Precision, recall, F1 and average precision of each label (None: not in the gold rows).

    Same conventions as :func:`multilabel_scores` (unlabelled rows ignored; precision is 0
    when nothing is predicted), whose macro F1 is the mean of these F1s.
    """
    p, t = _as_arrays(probs, targets)
    n_labels = t.shape[1]
    pred = p >= _thresholds(thresholds, n_labels)
    out: list[dict | None] = []
    for j in range(n_labels):
        if not t[:, j].any():
            out.append(None)
            continue
        tp = int((pred[:, j] & t[:, j]).sum())
        fp = int((pred[:, j] & ~t[:, j]).sum())
        fn = int((~pred[:, j] & t[:, j]).sum())
        out.append({"precision": tp / (tp + fp) if tp + fp else 0.0,
                    "recall": tp / (tp + fn), "f1": float(_f1(tp, fp, fn)),
                    "ap": average_precision(p[:, j], t[:, j])})
    return out


def tune_thresholds(probs, targets, grid: Sequence[float] = DEFAULT_GRID) -> list[float]:
    """Per-label threshold from ``grid`` that maximises that label's F1 (on validation data).

    Rows without gold labels are ignored, as in :func:`multilabel_scores`. Labels that never
    occur keep 0.5. Among tied thresholds the one closest to 0.5 wins, so a flat F1 curve
    does not drift to an extreme value.
    """
    p, t = _as_arrays(probs, targets)
    grid_arr = np.asarray(sorted(grid), dtype=np.float64)
    if grid_arr.size == 0:
        raise ValueError("tune_thresholds: empty threshold grid")
    out = [0.5] * t.shape[1]
    for j in range(t.shape[1]):
        y = t[:, j]
        if not y.any():
            continue
        pred = p[:, j][:, None] >= grid_arr[None, :]  # [N, G]
        tp = (pred & y[:, None]).sum(0)
        fp = (pred & ~y[:, None]).sum(0)
        fn = (~pred & y[:, None]).sum(0)
        f1 = _f1(tp, fp, fn)
        best = np.flatnonzero(f1 == f1.max())
        out[j] = float(grid_arr[best[np.argmin(np.abs(grid_arr[best] - 0.5))]])
    return out
