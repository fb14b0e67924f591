"""Typed configuration: one YAML file per experiment, one dataclass per section.

The sections (every key a user can write, with its type and default) are in
:mod:`translate.config.sections` and re-exported here; this module loads them and checks the
values, so that a typo or a wrong type is caught at load time with the key's dotted path
instead of surfacing as a mysterious failure an hour into training. Nothing else in the
package parses YAML.
"""

from __future__ import annotations

import dataclasses
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from translate.config.parse import ConfigError, apply_override, build_section, parse_yaml
from translate.config.sections import (
    CleaningConfig,
    Config,
    DataConfig,
    DomainConditioningConfig,
    InferenceConfig,
    LoggingConfig,
    ModelConfig,
    SamplingConfig,
    SourceConfig,
    SplitConfig,
    TaggerConfig,
    TokenizerConfig,
    TrainingConfig,
)

__all__ = [
    "DEVICE_HELP", "DEVICE_PATTERN", "ConfigError", "apply_override", "expand_environment",
    "from_dict", "load", "save", "to_dict", "validate", "validate_inference",
    "SourceConfig",
    "CleaningConfig",
    "SplitConfig",
    "SamplingConfig",
    "DataConfig",
    "TokenizerConfig",
    "TaggerConfig",
    "DomainConditioningConfig",
    "ModelConfig",
    "TrainingConfig",
    "InferenceConfig",
    "LoggingConfig",
    "Config",
]


# The device names training and inference both accept (checked again against the machine by
# translate.runtime.resolve_device), so that ``train --device cuda:1`` and ``infer --device
# cuda:1`` agree.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def _check(cond: bool, path: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{path}: expected {expected}, got {value!r}")


def validate(cfg: Config) -> Config:
    """Reject values that type-check but cannot work together."""
    d, t, m, tr, inf = cfg.data, cfg.tokenizer, cfg.model, cfg.training, cfg.inference
    _check(d.src_lang != d.tgt_lang, "data.tgt_lang", "a language other than data.src_lang",
           d.tgt_lang)
    for split in ("train", "valid", "test", "unsplit"):
        for i, src in enumerate(getattr(d, split)):
            where = f"data.{split}[{i}]"
            needed = {"text": "prefix", "tabular": "path", "hub": "name"}.get(src.kind)
            if needed and not getattr(src, needed):
                raise ConfigError(f"{where}.{needed}: required for kind {src.kind!r}")
            _check(src.max_pairs >= 0, f"{where}.max_pairs", "a number >= 0 (0 = all)",
                   src.max_pairs)
    _check(d.max_train_pairs >= 0, "data.max_train_pairs", "a number >= 0 (0 = all)",
           d.max_train_pairs)
    for key in ("max_valid", "max_test"):
        _check(getattr(d.split, key) >= 0, f"data.split.{key}", "a number >= 0",
               getattr(d.split, key))
    _check(d.cleaning.min_chars_for_ratio >= 0, "data.cleaning.min_chars_for_ratio",
           "a number >= 0", d.cleaning.min_chars_for_ratio)
    _check(DEVICE_PATTERN.fullmatch(tr.device) is not None, "training.device", DEVICE_HELP,
           tr.device)
    if not d.train and not d.unsplit:
        raise ConfigError("data.train: at least one training source (or data.unsplit) needed")
    _check(d.sampling.temperature > 0, "data.sampling.temperature",
           "a positive number (1 = corpus proportions)", d.sampling.temperature)
    for label, weight in d.sampling.weights.items():
        _check(weight > 0, f"data.sampling.weights.{label}", "a positive number", weight)
    frac = d.split.valid_fraction + d.split.test_fraction
    _check(0 <= frac < 1, "data.split.valid_fraction", "fractions summing to less than 1", frac)
    _check(d.cleaning.max_chars > 0, "data.cleaning.max_chars", "a positive number",
           d.cleaning.max_chars)
    _check(d.cleaning.max_ratio >= 1, "data.cleaning.max_ratio", "a number >= 1",
           d.cleaning.max_ratio)
    _check(t.vocab_size >= 16, "tokenizer.vocab_size", "at least 16", t.vocab_size)
    _check(0 < t.character_coverage <= 1, "tokenizer.character_coverage", "a number in (0, 1]",
           t.character_coverage)
    _check(t.max_tokens >= 2, "tokenizer.max_tokens", "at least 2", t.max_tokens)
    _check(t.input_sentence_size == 0 or t.input_sentence_size >= 2,
           "tokenizer.input_sentence_size", "0 (all sentences) or at least 2",
           t.input_sentence_size)
    for key in ("emb_dim", "enc_hidden", "enc_layers", "dec_hidden", "dec_layers"):
        _check(getattr(m, key) > 0, f"model.{key}", "a positive integer", getattr(m, key))
    _check(0 <= m.dropout < 1, "model.dropout", "a number in [0, 1)", m.dropout)
    _check(m.tagger.hidden > 0, "model.tagger.hidden", "a positive integer", m.tagger.hidden)
    _check(m.tagger.loss_weight >= 0, "model.tagger.loss_weight", "a number >= 0",
           m.tagger.loss_weight)
    if m.attention == "dot":
        _check(m.dec_hidden == 2 * m.enc_hidden, "model.attention",
               "'general' or 'mlp' unless dec_hidden == 2 * enc_hidden (dot attention)",
               m.attention)
    _validate_conditioning(m)
    if m.share_embeddings and not t.joint:
        raise ConfigError("model.share_embeddings: needs tokenizer.joint: true")
    _check(tr.lr > 0, "training.lr", "a positive number", tr.lr)
    _check(len(tr.betas) == 2 and all(0 <= b < 1 for b in tr.betas), "training.betas",
           "two numbers in [0, 1)", tr.betas)
    _check(tr.max_tokens > 0, "training.max_tokens", "a positive integer", tr.max_tokens)
    _check(tr.batch_size > 0, "training.batch_size", "a positive integer", tr.batch_size)
    _check(tr.accum_steps >= 1, "training.accum_steps", "at least 1", tr.accum_steps)
    _check(0 <= tr.label_smoothing < 1, "training.label_smoothing", "a number in [0, 1)",
           tr.label_smoothing)
    _check(tr.valid_every > 0, "training.valid_every", "a positive integer", tr.valid_every)
    _check(tr.save_every_minutes >= 0, "training.save_every_minutes", "a number >= 0 (0 = off)",
           tr.save_every_minutes)
    _check(tr.save_every_steps >= 0, "training.save_every_steps", "an integer >= 0 (0 = off)",
           tr.save_every_steps)
    _check(tr.max_nonfinite >= 1, "training.max_nonfinite", "at least 1", tr.max_nonfinite)
    for key, meaning in (("num_threads", "0 = torch's default"), ("max_steps", "0 = no limit"),
                         ("max_epochs", "0 = no limit"), ("max_minutes", "0 = no limit"),
                         ("warmup_steps", "0 = none"), ("weight_decay", "0 = none"),
                         ("clip_norm", "0 = no clipping"), ("patience", "0 = never stop"),
                         ("plateau_patience", "validations to wait"),
                         ("valid_max_sentences", "0 = the whole split"),
                         ("average_last", "0 = off"), ("num_samples", "0 = none")):
        _check(getattr(tr, key) >= 0, f"training.{key}", f"a number >= 0 ({meaning})",
               getattr(tr, key))
    _check(0 < tr.plateau_factor < 1, "training.plateau_factor", "a number in (0, 1)",
           tr.plateau_factor)
    _check(tr.max_steps > 0 or tr.max_epochs > 0 or tr.max_minutes > 0, "training.max_steps",
           "a limit: one of max_steps, max_epochs, max_minutes must be positive", tr.max_steps)
    _check(cfg.logging.log_every > 0, "logging.log_every", "a positive integer",
           cfg.logging.log_every)
    _check(cfg.logging.test_sentences >= 0, "logging.test_sentences", "an integer >= 0 (0 = off)",
           cfg.logging.test_sentences)
    _check(cfg.logging.attention_samples >= 0, "logging.attention_samples",
           "an integer >= 0 (0 = off)", cfg.logging.attention_samples)
    validate_inference(inf)
    return cfg


def _validate_conditioning(m: ModelConfig) -> None:
    dc = m.domain_conditioning
    if not dc.enabled:
        return
    if not m.tagger.enabled:
        raise ConfigError("model.domain_conditioning.enabled: needs model.tagger.enabled: true "
                          "(the domain mixture is over the tagger's labels)")
    _check(dc.dim > 0, "model.domain_conditioning.dim", "a positive integer", dc.dim)
    _check(0 <= dc.label_dropout <= 1, "model.domain_conditioning.label_dropout",
           "a probability in [0, 1]", dc.label_dropout)


def validate_inference(inf: InferenceConfig, prefix: str = "inference.") -> InferenceConfig:
    """The one check of inference options: the config file's and every later override's.

    ``prefix`` names the options as the caller's user wrote them: ``inference.`` for the
    YAML file, none for keyword arguments of ``Translator.translate`` / ``infer`` flags.
    """
    checks = [
        (inf.beam_size >= 1, "beam_size", "at least 1", inf.beam_size),
        (1 <= inf.n_best <= inf.beam_size, "n_best",
         f"between 1 and {prefix}beam_size ({inf.beam_size})", inf.n_best),
        (inf.batch_size >= 1, "batch_size", "at least 1", inf.batch_size),
        (inf.workers >= 1, "workers", "at least 1", inf.workers),
        (inf.max_len_a >= 0, "max_len_a", "at least 0", inf.max_len_a),
        (inf.max_len_b >= 0, "max_len_b", "at least 0", inf.max_len_b),
        (inf.min_len >= 0, "min_len", "at least 0", inf.min_len),
        (inf.no_repeat_ngram >= 0, "no_repeat_ngram", "at least 0", inf.no_repeat_ngram),
        (inf.shortlist_k >= 0, "shortlist_k", "at least 0", inf.shortlist_k),
        (inf.shortlist_frequent >= 0, "shortlist_frequent", "at least 0",
         inf.shortlist_frequent),
    ]
    for ok, name, expected, value in checks:
        _check(ok, prefix + name, expected, value)
    return inf


# --------------------------------------------------------------------------- building


def from_dict(raw: dict | None) -> Config:
    """Build and validate a :class:`Config` from plain data (e.g. parsed YAML)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"<root>: expected a mapping of sections, got {raw!r}")
    return validate(build_section(Config, raw, ""))


DEFAULT_CONFIG = "configs/default.yaml"


def resolve_path(path: str | Path) -> Path:
    """``path`` when it exists; else, for ``configs/NAME.yaml`` or ``NAME.yaml``, the copy
    shipped inside the package, so the README's commands work from any directory after a
    plain (non-editable) install."""
    p = Path(path)
    if p.is_file() or p.parent not in (Path("."), Path("configs")):
        return p
    packaged = resources.files("translate.config") / "presets" / p.name
    return Path(str(packaged)) if packaged.is_file() else p


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``--set``s."""
    raw: dict = {}
    if path is not None:
        p = resolve_path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            line = p.read_bytes()[:err.start].count(b"\n") + 1
            raise ConfigError(f"{p}: line {line}: not UTF-8 text ({err.reason} at byte "
                              f"{err.start})") from None
        raw = parse_yaml(text, str(p)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return from_dict(raw)
    except ConfigError as err:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{err}") from None


_ENV_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_environment(value: str, key: str) -> str:
    """``value`` with each ``$NAME`` / ``${NAME}`` replaced from the environment; a variable
    that is not set is an error naming ``key`` (a path with a literal ``$NAME`` in it would
    put the run somewhere nobody looks). Used for ``training.run_dir``, so that the runs a
    W&B sweep agent starts (it sets ``WANDB_RUN_ID``) get a folder each."""
    def lookup(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise ConfigError(f"{key}: {value}: the environment variable {name} is not set")
        return os.environ[name]

    return _ENV_VAR.sub(lookup, value)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (every default spelled out) next to a run."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
