"""From a config to model-ready data: corpus, tokenizer, label vocabulary, encoded splits.

The tokenizer and the label vocabulary belong to the run: they are written into the run
directory the first time (this module is their only writer) and read back from there
afterwards, so a resumed run (and inference) sees exactly the subword model and label order
that the weights were trained with.

Both expensive products are cached under ``data.cache_dir`` so that a new run on the same
data starts in seconds: the trained tokenizer (keyed on the corpus and the tokenizer
settings; copied into the run directory) and the encoded splits, which stay on disk and are
read row by row (:mod:`translate.data.encoding`), so a training process never holds the
corpus in memory. The tokenizer trains on at most ``tokenizer.input_sentence_size``
sentences, a seeded random sample of the training pairs when the corpus is larger: its
training time then stops growing with the corpus.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import sentencepiece as spm
import torch

from translate.config import Config, TokenizerConfig
from translate.data import Corpus, DataError, load_corpus
from translate.data.encoded import MappedSplit, publish
from translate.data.encoding import encode_corpus
from translate.data.export import needs_copy, write_corpus
from translate.data.schema import TextColumn, columns, sample_columns
from translate.data.tokenizer import Tokenizer, TokenizerError, changed_settings
from translate.runs.rundir import RunDir
from translate.training.loss import pos_weight_from_counts

SAMPLE_SEED = 20241  # the tokenizer's sample of a large corpus is the same on every run
SAMPLE_VERSION = 1  # bump when the sample (and so the cached tokenizer) would change


@dataclass
class Prepared:
    tokenizer: Tokenizer
    labels: list[str]
    splits: dict[str, MappedSplit]  # EncodedSplit's interface, read from the disk cache
    sources: dict[str, Sequence[str]]  # TextColumn: read on demand
    references: dict[str, Sequence[str]]
    # Each row's domain labels as the corpus has them, kept whether or not the run has a
    # tagger: sampling balances the training domains and validation scores each domain.
    domains: dict[str, Sequence[list[str]]]
    pos_weight: torch.Tensor | None
    report: dict  # the corpus report plus ``truncated``: pieces cut per split and side


def prepare(cfg: Config, run: RunDir, log: Callable[[str], None] = print) -> Prepared:
    corpus = load_corpus(cfg.data, log=log)
    if needs_copy(cfg.data):  # gettext, hub: the corpus has no readable files of its own
        write_corpus(corpus, cfg.data, log=log)
    if cfg.model.domain_conditioning.enabled and not corpus.labels:
        raise DataError("model.domain_conditioning.enabled: the training data has no domain "
                        "labels to condition on (give sources `domains: [...]` or a "
                        "`domains_column`)")
    labels = _labels(run, corpus.labels) if cfg.model.tagger.enabled else []
    tok = _tokenizer(cfg, run, corpus, log)
    limit = cfg.tokenizer.max_tokens
    splits, encoded = encode_corpus(
        corpus.splits, corpus.key, tok.fingerprint(),
        functools.partial(tok.encode_src_arrays, num_threads=1),
        functools.partial(tok.encode_tgt_arrays, num_threads=1),
        max(tok.src_vocab_size, tok.tgt_vocab_size), labels, limit, cfg.data.cache_dir,
        log=log)
    report = dict(corpus.report, truncated=_truncations(splits, limit, log), encoded=encoded)
    return Prepared(
        tokenizer=tok, labels=labels, splits=splits,
        sources={name: TextColumn(ds, "src") for name, ds in corpus.splits.items()},
        references={name: TextColumn(ds, "tgt") for name, ds in corpus.splits.items()},
        domains={name: TextColumn(ds, "domains") for name, ds in corpus.splits.items()},
        pos_weight=_pos_weight(splits["train"], len(labels)), report=report)


def _tokenizer(cfg: Config, run: RunDir, corpus: Corpus, log: Callable[[str], None]) -> Tokenizer:
    """The run's tokenizer: its own, else the one trained on this corpus before, else new."""
    if (run.tokenizer_dir / "tokenizer.json").is_file():
        tok = Tokenizer.load(run.tokenizer_dir)
        changed = changed_settings(run.tokenizer_dir, cfg.tokenizer)
        if changed:  # a run's weights are tied to its pieces: it never swaps tokenizers
            raise TokenizerError(
                f"{run.tokenizer_dir / 'tokenizer.json'}: the run's tokenizer was trained with "
                f"other settings than the config's ({'; '.join(changed)}); set them back, or "
                "start a new run (another training.run_dir, or translate.train --overwrite)")
        log(f"tokenizer: reusing {run.tokenizer_dir}")
        return tok
    if cfg.tokenizer.reuse:
        return _reused_tokenizer(cfg.tokenizer, run, log)
    settings = {k: v for k, v in dataclasses.asdict(cfg.tokenizer).items()
                if k not in ("max_tokens", "reuse")}
    key = hashlib.sha256(json.dumps(
        {"v": SAMPLE_VERSION, "corpus": corpus.key, "tokenizer": settings,
         "sentencepiece": spm.__version__}, sort_keys=True).encode()).hexdigest()[:20]
    cached = Path(cfg.data.cache_dir) / f"tokenizer-{key}"
    if (cached / "tokenizer.json").is_file():
        try:
            Tokenizer.load(cached)  # a damaged cache entry is retrained, not copied
        except TokenizerError:
            pass
        else:
            shutil.rmtree(run.tokenizer_dir, ignore_errors=True)
            shutil.copytree(cached, run.tokenizer_dir)
            tok = Tokenizer.load(run.tokenizer_dir)
            log(f"tokenizer: reused the {cfg.tokenizer.model_type} model trained on this "
                f"corpus before ({tok.src_vocab_size}/{tok.tgt_vocab_size} pieces), from "
                f"{cached}")
            return tok
    src, tgt = _tokenizer_sample(corpus.splits["train"], cfg.tokenizer, log)
    tok = Tokenizer.train(cfg.tokenizer, src, tgt, run.tokenizer_dir, log=log)
    log(f"tokenizer: trained {cfg.tokenizer.model_type} "
        f"({tok.src_vocab_size}/{tok.tgt_vocab_size} pieces) in {run.tokenizer_dir}")
    tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run.tokenizer_dir, tmp)
    publish(tmp, cached)
    return tok


def _reused_tokenizer(cfg: TokenizerConfig, run: RunDir,
                      log: Callable[[str], None]) -> Tokenizer:
    """``tokenizer.reuse``: another run's tokenizer, copied into this run's directory, when
    it was trained with this config's settings."""
    source = RunDir(cfg.reuse).tokenizer_dir
    Tokenizer.load(source)  # a missing or broken one is named here
    changed = changed_settings(source, cfg)
    if changed:
        raise TokenizerError(f"tokenizer.reuse {cfg.reuse}: its tokenizer was trained with "
                             f"other settings than the config's ({'; '.join(changed)}); "
                             "set them alike")
    shutil.rmtree(run.tokenizer_dir, ignore_errors=True)
    shutil.copytree(source, run.tokenizer_dir)
    log(f"tokenizer: {cfg.reuse}'s, copied to {run.tokenizer_dir} (tokenizer.reuse)")
    return Tokenizer.load(run.tokenizer_dir)


def _tokenizer_sample(train: datasets.Dataset, cfg: TokenizerConfig,
                      log: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """The training pairs the tokenizer learns from: all of them, or a seeded random sample
    when they hold more than ``input_sentence_size`` sentences per model (a joint model
    reads both sides). Sampling here rather than in sentencepiece keeps the text passed to
    it, and so the memory and time of training, bounded and the sample reproducible."""
    per_pair = 2 if cfg.joint else 1
    pairs = cfg.input_sentence_size // per_pair if cfg.input_sentence_size else len(train)
    if len(train) > pairs:
        rng = np.random.default_rng(SAMPLE_SEED)
        rows = np.sort(rng.choice(len(train), size=pairs, replace=False))
        log(f"tokenizer: training on a random sample of {pairs} of {len(train)} pairs "
            f"(tokenizer.input_sentence_size={cfg.input_sentence_size})")
        src, tgt = sample_columns(train, rows, "src", "tgt")
    else:
        src, tgt = columns(train, "src", "tgt")
    return src, tgt


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


def _truncations(splits: dict[str, MappedSplit], limit: int,
                 log: Callable[[str], None]) -> dict[str, dict[str, int]]:
    """Count (and say) the sentences cut to ``limit`` pieces: the model never sees their end."""
    counts = {}
    for name, split in splits.items():
        counts[name] = {"src": split.n_truncated_src, "tgt": split.n_truncated_tgt}
        if split.n_truncated_src or split.n_truncated_tgt:
            log(f"data: {name}: {split.n_truncated_src} sources and {split.n_truncated_tgt} "
                f"targets of {len(split)} pairs cut to tokenizer.max_tokens={limit} pieces")
    return counts


def _pos_weight(split: MappedSplit, n_labels: int) -> torch.Tensor | None:
    """BCEWithLogitsLoss's per-label pos_weight from the labelled training rows."""
    if not n_labels:
        return None
    counts, labelled = split.label_counts()
    return pos_weight_from_counts(torch.from_numpy(counts).float(), labelled)
