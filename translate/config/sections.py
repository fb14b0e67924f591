"""The configuration's sections: one dataclass per YAML section, every key with its type and
default (and, in a comment, what it is for).

Loading, ``--set`` overrides and the checks on the values live in :mod:`translate.config`,
which re-exports these classes; this module is the list of keys a user can write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# --------------------------------------------------------------------------- sections


@dataclass
class SourceConfig:
    """One corpus source; its rows become ``{src, tgt, domains}``.

    kind:
      - ``text``: plain parallel files ``{prefix}.{src_lang}`` and ``{prefix}.{tgt_lang}``.
      - ``tabular``: ``path`` to TSV/CSV/JSONL/Parquet with ``src_column``/``tgt_column``
        (and optionally ``domains_column`` holding a list of labels).
      - ``hub``: a Hugging Face dataset ``name`` (or a local dataset directory / a dataset
        saved with ``save_to_disk``) with ``subset`` and ``split``; either flat columns or the
        ``{"translation": {lang: text}}`` layout.
      - ``gettext``: the offline corpus built from the machine's ``.mo`` catalogs.
    """

    kind: Literal["text", "tabular", "hub", "gettext"] = "text"
    prefix: str | None = None
    path: str | None = None
    format: Literal["auto", "tsv", "csv", "jsonl", "parquet"] = "auto"
    src_column: str = "src"
    tgt_column: str = "tgt"
    domains_column: str | None = None
    name: str | None = None
    subset: str | None = None
    split: str = "train"
    domains: list[str] = field(default_factory=list)
    max_pairs: int = 0  # keep only the first N pairs of this source (0 = all)
    # gettext only
    locale_dirs: list[str] = field(default_factory=lambda: ["/usr/share/locale"])
    extra_catalog_dirs: list[str] = field(default_factory=list)
    domain_map: str | None = None


@dataclass
class CleaningConfig:
    """Training-split filters; every dropped pair is counted by reason."""

    max_chars: int = 400
    max_ratio: float = 3.0
    min_chars_for_ratio: int = 10
    dedup: bool = True


@dataclass
class SplitConfig:
    """Hash split for sources without predefined splits (keyed on the source sentence)."""

    valid_fraction: float = 0.02
    test_fraction: float = 0.02
    max_valid: int = 2000
    max_test: int = 2000
    seed: str = "translate"


@dataclass
class SamplingConfig:
    """How often each domain's training pairs are drawn (translate.data.sampling).

    A row's domain is its label (the rarest one when it has several; unlabelled rows form a
    group of their own). Each epoch draws as many rows as the training split holds, domain
    ``i`` getting a share ``p_i`` proportional to ``(weights[i] * n_i) ** (1 / temperature)``
    (fairseq / OpenNMT-py style): 1 keeps the corpus proportions, larger values flatten them
    towards uniform, so that a 1.5k-pair domain is not drowned by a 46k-pair one. With
    ``temperature: 1`` and no weights the epoch is the corpus itself, as without sampling.
    """

    temperature: float = 1.0
    weights: dict[str, float] = field(default_factory=dict)  # domain label -> multiplier


@dataclass
class DataConfig:
    src_lang: str = "de"
    tgt_lang: str = "en"
    train: list[SourceConfig] = field(default_factory=list)
    valid: list[SourceConfig] = field(default_factory=list)
    test: list[SourceConfig] = field(default_factory=list)
    # Sources with no split of their own: divided into train/valid/test by a hash.
    unsplit: list[SourceConfig] = field(default_factory=list)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    cache_dir: str = ".cache/translate"
    # Where the prepared corpus is written as plain parallel text for people to read
    # (``<dir>/<name>/train.en`` ..., with manifest.json); null: nowhere. Written by
    # ``python -m translate.data``, and by training for the sources that have no readable
    # files of their own (gettext, hub). Never read back: the cache is what trains.
    dir: str | None = "data"
    # The corpus's folder under ``dir``; null: named after its sources and languages
    # (``gettext-en-de``, ``multi30k-de-en``).
    name: str | None = None
    # For quick experiments: keep only the first N training pairs (0 = all).
    max_train_pairs: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class TokenizerConfig:
    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    joint: bool = True
    character_coverage: float = 1.0
    byte_fallback: bool = True
    # Sentences per model the tokenizer learns from (0 = all): a larger training corpus is
    # sampled (seeded, whole pairs), so tokenizer training time stops growing with it. The
    # default keeps unigram training on a 2-core host within a minute; more sentences
    # barely change the pieces a sentence needs (measured: docs/benchmarks.md, "Epoch plan,
    # tokenizer sample, shortlist").
    input_sentence_size: int = 100_000
    max_tokens: int = 256  # longest source/target in pieces fed to the model
    # A run directory whose tokenizer this run takes instead of training one (its settings
    # must be this section's): models that share a tokenizer can be decoded as an ensemble.
    reuse: str | None = None


@dataclass
class TaggerConfig:
    enabled: bool = True
    pooling: Literal["mean", "attention"] = "mean"
    hidden: int = 256
    loss_weight: float = 0.1
    pos_weight: bool = False


@dataclass
class DomainConditioningConfig:
    """Tell the decoder the domain (:mod:`translate.model.conditioning`).

    Off by default: a model without it is the model trained before it existed. ``dim``:
    size of each label's learned embedding. ``label_dropout``: in training, the probability
    that a sentence's gold-label mixture is replaced by zeros ("unknown domain"), so the
    model also learns to translate when no label is known (``--domain none``, or a tagger
    that passes no threshold). Needs the tagger and labelled training data. ``output``: also
    shift the output layer's query by the domain (a per-label vector added to the generator's
    input), a direct path from the domain to the word choice that needs no help from the
    recurrence; off by default, so a conditioned run from before it loads unchanged.
    """

    enabled: bool = False
    dim: int = 32
    label_dropout: float = 0.2
    output: bool = False


@dataclass
class ModelConfig:
    emb_dim: int = 256
    enc_hidden: int = 256  # per direction
    enc_layers: int = 2
    dec_hidden: int = 512
    dec_layers: int = 2
    dropout: float = 0.3
    attention: Literal["dot", "general", "mlp"] = "general"
    input_feeding: bool = True
    tie_output: bool = False
    share_embeddings: bool = False
    tagger: TaggerConfig = field(default_factory=TaggerConfig)
    domain_conditioning: DomainConditioningConfig = field(
        default_factory=DomainConditioningConfig)
    # Fast implementations (default) or their plain references, for checking and debugging.
    # Same weights and checkpoint keys either way. false: nn.LSTM called step by step instead
    # of the decoder's hand-fused recurrence (model/decoder.py, model/feed_rnn.py).
    fused_decoder_rnn: bool = True
    # false: nn.Dropout instead of the integer-mask CPU dropout (model/dropout.py).
    fast_dropout: bool = True


@dataclass
class TrainingConfig:
    run_dir: str = "runs/default"
    device: str = "auto"  # DEVICE_PATTERN
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 1234
    batch_type: Literal["tokens", "sentences"] = "tokens"
    max_tokens: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    scheduler: Literal["inverse_sqrt", "plateau", "constant"] = "inverse_sqrt"
    warmup_steps: int = 500
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    clip_norm: float = 1.0
    accum_steps: int = 1
    label_smoothing: float = 0.1
    max_steps: int = 0  # 0 = no step limit
    max_epochs: int = 10
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    valid_every: int = 1000
    # Checkpoints of the resumable state between validations, so a kill loses at most this
    # much work; 0 turns either off.
    save_every_minutes: float = 10.0
    save_every_steps: int = 0
    # Validate on at most this many rows (0 = the whole validation split): a sample that
    # keeps every domain, stratified by each row's label set, in proportion with at least one
    # row per label set while the cap allows, drawn with a fixed seed (the same rows in every
    # run and after a resume) and kept in the split's order (translate/training/valid_sample.py).
    valid_max_sentences: int = 0
    early_stopping_metric: Literal["loss", "bleu", "chrf"] = "bleu"
    patience: int = 0  # validations without improvement before stopping; 0 = never
    max_nonfinite: int = 5
    num_threads: int = 0  # 0 = torch's default
    average_last: int = 0  # average the last N validations' weights (kept if it validates better)
    num_samples: int = 5


@dataclass
class InferenceConfig:
    beam_size: int = 5
    alpha: float = 0.6
    max_len_a: float = 1.5
    max_len_b: int = 10
    min_len: int = 1
    n_best: int = 1
    no_repeat_ngram: int = 0
    batch_size: int = 128  # sentences; smaller batches made beam 5 slower on CPU
    quantize: bool = False
    # CPU batches decoded at once, torch's threads split among them. 2 workers ran more
    # sentences/s than 1 on 2 cores but hold two batches in memory, which takes the whole
    # default command past the translation memory budget, so the default stays 1.
    workers: int = 1
    # Decode each batch over a vocabulary shortlist (translate.search.shortlist) when the run has
    # one (shortlist.pt, written at the end of training): the ``shortlist_k`` target pieces
    # with the highest Dice for each source piece of the batch (at most 100, the stored
    # width), plus the ``shortlist_frequent`` most frequent target pieces. Scores are then
    # log-probabilities over the shortlist, and outputs can depend on which sentences share
    # a batch; ``shortlist: false`` (``--shortlist off``) scores over the whole vocabulary.
    shortlist: bool = True
    shortlist_k: int = 30
    shortlist_frequent: int = 1000


@dataclass
class LoggingConfig:
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "translate"
    entity: str | None = None
    run_name: str | None = None
    log_every: int = 100
    artifacts: bool = True  # the best weights, tokenizer, labels and config as a W&B artifact
    test_sentences: int = 10  # the test set's N worst and N best sentences by chrF (0: none)
    attention_samples: int = 3  # validation sentences whose attention is logged (0: none)


@dataclass
class DistillConfig:
    """Read by ``python -m translate.distill`` only (translate.distill.settings)."""

    keep_references: bool = False  # also train the student on the human references
    # Which of the teacher's beam hypotheses a source gets: "best", the top one (sequence-level
    # knowledge distillation); "closest", of the beam's n-best the one nearest the human
    # reference by sentence BLEU (Kim & Rush's sequence-level interpolation).
    select: Literal["best", "closest"] = "best"
    beam_size: int | None = None  # the teacher's search; None: the teacher's inference config
    batch_size: int | None = None
    device: str | None = None  # None: the teacher's training.device
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = None  # None: the teacher's
    chunk_lines: int = 2048  # source lines per atomically written chunk (the resume unit)
    output: str | None = None  # the distilled corpus' folder; None: {run_dir}/distilled


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
