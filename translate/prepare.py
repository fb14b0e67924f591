"""From a config to model-ready data: corpus, tokenizer, label vocabulary, encoded splits.

The tokenizer and the label vocabulary belong to the run: they are written into the run
directory the first time (this module is their only writer) and read back from there
afterwards, so a resumed run (and inference) sees exactly the subword model and label order
that the weights were trained with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from translate.batching import EncodedSplit, encode_split
from translate.config import Config
from translate.data import DataError, load_corpus
from translate.data.schema import columns
from translate.loss import pos_weight_from_counts
from translate.rundir import RunDir
from translate.tokenizer import Tokenizer


@dataclass
class Prepared:
    tokenizer: Tokenizer
    labels: list[str]
    splits: dict[str, EncodedSplit]
    sources: dict[str, list[str]]
    references: dict[str, list[str]]
    # Each row's domain labels as the corpus has them, kept whether or not the run has a
    # tagger: sampling balances the training domains and validation scores each domain.
    domains: dict[str, list[list[str]]]
    pos_weight: torch.Tensor | None
    report: dict  # the corpus report plus ``truncated``: pieces cut per split and side


def prepare(cfg: Config, run: RunDir, log: Callable[[str], None] = print) -> Prepared:
    corpus = load_corpus(cfg.data, log=log)
    if cfg.model.domain_conditioning.enabled and not corpus.labels:
        raise DataError("model.domain_conditioning.enabled: the training data has no domain "
                        "labels to condition on (give sources `domains: [...]` or a "
                        "`domains_column`)")
    labels = _labels(run, corpus.labels) if cfg.model.tagger.enabled else []
    text = {name: columns(ds, "src", "tgt") for name, ds in corpus.splits.items()}
    if (run.tokenizer_dir / "tokenizer.json").is_file():
        tok = Tokenizer.load(run.tokenizer_dir)
        log(f"tokenizer: reusing {run.tokenizer_dir}")
    else:
        tok = Tokenizer.train(cfg.tokenizer, *text["train"], run.tokenizer_dir, log=log)
        log(f"tokenizer: trained {cfg.tokenizer.model_type} "
            f"({tok.src_vocab_size}/{tok.tgt_vocab_size} pieces) in {run.tokenizer_dir}")
    limit = cfg.tokenizer.max_tokens
    splits = {name: encode_split(ds, tok, labels, limit) for name, ds in corpus.splits.items()}
    report = dict(corpus.report, truncated=_truncations(splits, limit, log))
    return Prepared(
        tokenizer=tok, labels=labels, splits=splits,
        sources={name: src for name, (src, _) in text.items()},
        references={name: tgt for name, (_, tgt) in text.items()},
        domains={name: [list(d) for d in columns(ds, "domains")[0]]
                 for name, ds in corpus.splits.items()},
        pos_weight=_pos_weight(splits["train"], len(labels)), report=report)


def _labels(run: RunDir, corpus_labels: list[str]) -> list[str]:
    """The saved label order wins, so resumed runs keep their output layer's meaning."""
    saved = run.read_labels()
    if saved is None:
        run.write_labels(corpus_labels)
        return list(corpus_labels)
    missing = sorted(set(corpus_labels) - set(saved))
    if missing:
        raise DataError(f"{run.labels_path}: the corpus has labels the run was not trained "
                        f"with: {', '.join(missing)}")
    return saved


def _truncations(splits: dict[str, EncodedSplit], limit: int,
                 log: Callable[[str], None]) -> dict[str, dict[str, int]]:
    """Count (and say) the sentences cut to ``limit`` pieces: the model never sees their end."""
    counts = {}
    for name, split in splits.items():
        counts[name] = {"src": split.n_truncated_src, "tgt": split.n_truncated_tgt}
        if split.n_truncated_src or split.n_truncated_tgt:
            log(f"data: {name}: {split.n_truncated_src} sources and {split.n_truncated_tgt} "
                f"targets of {len(split)} pairs cut to tokenizer.max_tokens={limit} pieces")
    return counts


def _pos_weight(split: EncodedSplit, n_labels: int) -> torch.Tensor | None:
    """BCEWithLogitsLoss's per-label pos_weight from the labelled training rows."""
    if not n_labels:
        return None
    counts = torch.zeros(n_labels)
    labelled = [ids for ids in split.label_ids if ids]
    for ids in labelled:
        counts[list(ids)] += 1
    return pos_weight_from_counts(counts, len(labelled))
