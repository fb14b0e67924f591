"""How well can *any* sentence classifier tag a config's domains? About 2 minutes; prints JSON.

A reference point for the tagger's targets: the field's standard strong baseline
for short-text classification — tf-idf character 1-5-grams (within words) plus word 1-2-grams
of the source sentence, one linear SVM per label (class-balanced, one-vs-rest, so a pair in
two sources trains against both labels) — trained on the config's labelled training data and
scored on its labelled dev sets exactly as ``python -m bench domains`` scores the tagger:
micro/macro-F1 over the labels, per-label F1, the confusion between domains. Two operating
points: each sentence's top label (``argmax``) and per-label thresholds tuned on the dev sets
themselves (``tuned_on_dev``: optimistic, an upper bound for this classifier).

It needs scikit-learn, which ``translate`` does not depend on (``pip install scikit-learn``):
this is a measurement of the data, not part of the toolkit.

    python -m bench tagger_ceiling --config configs/multidomain.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench._tag_scores import confusion, f1_scores, multi_hot

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "multidomain.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--max-pairs", type=int, default=0, help="dev pairs per domain (0 = all)")
    ap.add_argument("--C", type=float, default=0.3, help="SVM regularisation")
    return ap.parse_args()


def labelled_rows(cfg_path: str, overrides: list[str],
                  max_pairs: int) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Sources and labels of the config's train and valid splits, read and cleaned once, as
    training does; ``max_pairs`` caps every valid source as ``translate.evaluate`` does
    (0 = whole files)."""
    from translate import config
    from translate.data import load_corpus
    from translate.data.schema import columns

    cfg = config.load(cfg_path, overrides)
    for source in cfg.data.valid:
        source.max_pairs = max_pairs
    splits = load_corpus(cfg.data, log=lambda _msg: None).splits
    out = {}
    for name in ("train", "valid"):
        src, doms = columns(splits[name], "src", "domains")
        out[name] = (src, [list(d) for d in doms])
    return out


def features(train: list[str], dev: list[str]):
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 5), min_df=2,
                            sublinear_tf=True, max_features=400_000)
    words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                            lowercase=False, token_pattern=r"\S+")
    a = hstack([chars.fit_transform(train), words.fit_transform(train)]).tocsr()
    b = hstack([chars.transform(dev), words.transform(dev)]).tocsr()
    return a, b


def main() -> None:
    args = parse_args()
    try:
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.svm import LinearSVC
    except ImportError:
        sys.exit("bench tagger_ceiling: needs scikit-learn (pip install scikit-learn); "
                 "translate itself does not depend on it")
    from translate.tracking.metrics import multilabel_scores, tune_thresholds

    if args.max_pairs < 0:
        sys.exit(f"bench tagger_ceiling: --max-pairs: expected 0 (all) or more, got "
                 f"{args.max_pairs}")
    t0 = time.perf_counter()
    rows = labelled_rows(args.config, args.overrides, args.max_pairs)
    (tr_src, tr_gold), (dv_src, dv_gold) = rows["train"], rows["valid"]
    labels = sorted({lab for g in tr_gold for lab in g})
    y_tr, y_dv = multi_hot(tr_gold, labels), multi_hot(dv_gold, labels)
    a, b = features(tr_src, dv_src)
    clf = OneVsRestClassifier(LinearSVC(C=args.C, class_weight="balanced")).fit(a, y_tr)
    # Margins through a sigmoid: probability-like scores in (0, 1) for the threshold grid;
    # the ranking (mAP, argmax) is the SVM's own.
    scores = 1.0 / (1.0 + np.exp(-clf.decision_function(b)))
    best = scores.argmax(1)
    top = np.zeros_like(scores)
    top[np.arange(len(scores)), best] = 1.0
    tuned = tune_thresholds(scores, y_dv)
    out = {
        "config": args.config, "train_pairs": len(tr_src), "dev_sentences": len(dv_src),
        "classifier": f"tf-idf char_wb 1-5 + word 1-2, one-vs-rest LinearSVC(C={args.C}, "
                      "class_weight=balanced)",
        # mAP is ranking-only: from the SVM's scores, not from a thresholded matrix.
        "mAP": round(multilabel_scores(scores, y_dv)["mAP"], 4),
        "argmax": f1_scores(top, y_dv, 0.5, labels),
        "tuned_on_dev": {**f1_scores(scores, y_dv, tuned, labels),
                         "thresholds": dict(zip(labels, tuned, strict=True))},
        "confusion_argmax": confusion([[labels[int(i)]] for i in best], dv_gold),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
