"""BLEU/chrF against sacrebleu's own corpus functions; multilabel scores against hand values."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sacrebleu

from translate.tracking.metrics import (
    average_precision,
    bleu_chrf,
    multilabel_scores,
    tune_thresholds,
)


def _perturb(lines: list[str], seed: int = 0) -> list[str]:
    """A plausible 'system output': drop, swap and duplicate some words."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = line.split()
        if len(words) > 3 and rng.random() < 0.5:
            del words[rng.randrange(len(words))]
        if len(words) > 3 and rng.random() < 0.3:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        if words and rng.random() < 0.2:
            words.append(words[0].lower())
        out.append(" ".join(words))
    return out


def test_bleu_chrf_matches_sacrebleu(multi30k):
    refs = (multi30k / "val.en").read_text(encoding="utf-8").splitlines()
    hyps = _perturb(refs)
    got = bleu_chrf(hyps, refs)
    assert got["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert got["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    assert 20 < got["bleu"] < 95 and 40 < got["chrf"] < 98
    assert "tok:13a" in got["bleu_signature"] and "nrefs:1" in got["bleu_signature"]
    assert "nc:6" in got["chrf_signature"]
    assert f"version:{sacrebleu.__version__}" in got["chrf_signature"]
    assert bleu_chrf(refs[:50], refs[:50])["bleu"] == 100.0


def test_bleu_chrf_edge_cases():
    empty = bleu_chrf([], [])
    assert empty["bleu"] == 0.0 and empty["chrf"] == 0.0
    assert "nrefs:1" in empty["bleu_signature"] and empty["chrf_signature"]
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu_chrf(["a", "b"], ["a"])


# A hand-checked example: 4 labelled rows, one unlabelled row (ignored even though it would
# add false positives everywhere), and label 2 that never occurs.
PROBS = np.array([
    [0.9, 0.6, 0.1],
    [0.4, 0.7, 0.2],
    [0.8, 0.3, 0.05],
    [0.7, 0.2, 0.6],
    [0.99, 0.99, 0.99],
])
TARGETS = np.array([
    [1, 0, 0],
    [1, 1, 0],
    [0, 1, 0],
    [1, 0, 0],
    [0, 0, 0],
])


def test_multilabel_scores_hand_computed():
    got = multilabel_scores(PROBS, TARGETS, 0.5)
    # At 0.5: label 0 tp=2 fp=1 fn=1 (F1 2/3); label 1 tp=1 fp=1 fn=1 (F1 1/2);
    # label 2 fp=1 (counts for micro only). Micro: tp=3 fp=3 fn=2 -> 6/11.
    assert got["rows"] == 4
    assert got["micro_f1"] == pytest.approx(6 / 11)
    assert got["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # AP label 0: ranking + - + + -> (1 + 2/3 + 3/4) / 3 = 29/36;
    # AP label 1: ranking + - + - -> (1 + 2/3) / 2 = 5/6.
    assert got["mAP"] == pytest.approx((29 / 36 + 5 / 6) / 2)
    # Per-label thresholds: label 0 at 0.85 predicts only row 0 -> tp=1 fp=0 fn=2.
    per_label = multilabel_scores(PROBS, TARGETS, [0.85, 0.5, 0.5])
    assert per_label["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 3))
    # Threshold is inclusive: prob >= threshold.
    assert multilabel_scores(PROBS, TARGETS, [0.9, 0.7, 1.0])["micro_f1"] == pytest.approx(
        2 * 2 / (2 * 2 + 0 + 3)
    )


def test_multilabel_edge_cases():
    none = multilabel_scores(np.zeros((3, 2)), np.zeros((3, 2)), 0.5)
    assert none == {"micro_f1": 0.0, "macro_f1": 0.0, "mAP": 0.0, "rows": 0}
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        multilabel_scores(np.zeros((3, 2)), np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="one threshold or 3"):
        multilabel_scores(PROBS, TARGETS, [0.5, 0.5])
    # Tied scores are one threshold: the order of tied rows does not matter.
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert average_precision(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(average_precision(np.array([0.5]), np.array([0])))


def test_tune_thresholds_hand_case():
    probs = np.array([[0.1, 0.9], [0.35, 0.2], [0.4, 0.3], [0.8, 0.1]])
    targets = np.array([[0, 0], [1, 0], [1, 0], [1, 0]])
    # Label 0: every threshold in (0.1, 0.35] separates perfectly; 0.35 is closest to 0.5.
    # Label 1 never occurs: default 0.5.
    assert tune_thresholds(probs, targets) == [0.35, 0.5]


def test_tune_thresholds_improve_f1():
    rng = np.random.default_rng(0)
    n, n_labels = 600, 4
    targets = (rng.random((n, n_labels)) < [0.3, 0.1, 0.5, 0.0]).astype(int)
    # Calibration differs per label (as a tagger trained with imbalanced labels would be):
    # label 0 under-confident, label 1 over-confident, label 2 roughly right.
    centre_pos, centre_neg = np.array([0.35, 0.8, 0.7, 0.5]), np.array([0.15, 0.55, 0.3, 0.2])
    probs = np.where(targets, centre_pos, centre_neg) + rng.normal(0, 0.1, (n, n_labels))
    probs = np.clip(probs, 0, 1)
    valid, test = slice(0, 300), slice(300, None)
    th = tune_thresholds(probs[valid], targets[valid])
    assert th[3] == 0.5  # no positives
    assert th[0] < 0.5 < th[1]
    before = multilabel_scores(probs[test], targets[test], 0.5)
    after = multilabel_scores(probs[test], targets[test], th)
    assert after["micro_f1"] > before["micro_f1"] + 0.05
    assert after["macro_f1"] > before["macro_f1"] + 0.05
    assert after["mAP"] == before["mAP"]  # ranking metric: thresholds do not matter
