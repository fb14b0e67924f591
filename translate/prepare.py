"""From a config to model-ready data: corpus, tokenizer, label vocabulary, encoded splits.

The tokenizer and the label vocabulary are written into the run directory the first time
and read back from there afterwards, so a resumed run (and inference) sees exactly the
subword model and label order that the weights were trained with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from translate.batching import EncodedSplit, encode_split
from translate.checkpoint import RunDir
from translate.config import Config
from translate.data import load_corpus
from translate.data.sources import columns
from translate.tokenizer import Tokenizer


@dataclass
class Prepared:
    tokenizer: Tokenizer
    labels: list[str]
    splits: dict[str, EncodedSplit]
    sources: dict[str, list[str]]
    references: dict[str, list[str]]
    pos_weight: torch.Tensor | None
    report: dict


def prepare(cfg: Config, run: RunDir, log: Callable[[str], None] = print) -> Prepared:
    corpus = load_corpus(cfg.data, log=log)
    labels = _labels(run, corpus.labels) if cfg.model.tagger.enabled else []
    text = {name: columns(ds, "src", "tgt") for name, ds in corpus.splits.items()}
    if (run.tokenizer_dir / "tokenizer.json").is_file():
        tok = Tokenizer.load(run.tokenizer_dir)
        log(f"tokenizer: reusing {run.tokenizer_dir}")
    else:
        tok = Tokenizer.train(cfg.tokenizer, *text["train"], run.tokenizer_dir, log=log)
        log(f"tokenizer: trained {cfg.tokenizer.model_type} "
            f"({tok.src_vocab_size}/{tok.tgt_vocab_size} pieces) in {run.tokenizer_dir}")
    splits = {name: encode_split(ds, tok, labels, cfg.tokenizer.max_tokens)
              for name, ds in corpus.splits.items()}
    return Prepared(
        tokenizer=tok, labels=labels, splits=splits,
        sources={name: src for name, (src, _) in text.items()},
        references={name: tgt for name, (_, tgt) in text.items()},
        pos_weight=_pos_weight(splits["train"], len(labels)), report=corpus.report)


def _labels(run: RunDir, corpus_labels: list[str]) -> list[str]:
    """The saved label order wins, so resumed runs keep their output layer's meaning."""
    if run.labels_path.is_file():
        saved = json.loads(run.labels_path.read_text(encoding="utf-8"))["labels"]
        missing = sorted(set(corpus_labels) - set(saved))
        if missing:
            raise ValueError(f"{run.labels_path}: the corpus has labels the run was not "
                             f"trained with: {', '.join(missing)}")
        return list(saved)
    run.write_labels(corpus_labels, None)
    return list(corpus_labels)


def _pos_weight(split: EncodedSplit, n_labels: int) -> torch.Tensor | None:
    """negatives/positives per label over labelled rows (BCEWithLogitsLoss's pos_weight)."""
    if not n_labels:
        return None
    counts = torch.zeros(n_labels)
    rows = 0
    for ids in split.label_ids:
        if ids:
            rows += 1
            counts[list(ids)] += 1
    return ((rows - counts) / counts.clamp(min=1)).clamp(min=1.0)
