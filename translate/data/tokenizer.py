"""Subword tokenizer: sentencepiece (unigram or BPE), joint or separate source/target models.

Why these sentencepiece options (all chosen so that ``decode(encode(x)) == x`` exactly):

- ``normalization_rule_name="identity"``: NFKC (sentencepiece's default ``nmt_nfkc``) rewrites
  ligatures, fractions, full-width forms, NBSP, zero-width characters, tabs... A translation
  system must give back the text it was given, and the references are scored unnormalised.
- ``remove_extra_whitespaces=False``: software messages contain runs of spaces and leading /
  trailing blanks on purpose; the default would collapse or strip them.
- ``add_dummy_prefix=True``: a word at the start of a sentence gets the same pieces as the same
  word after a space; decoding removes exactly the one space it added, so it stays lossless.
- ``byte_fallback=True`` (default of ``TokenizerConfig``): any character never seen in training
  (emoji, CJK, mojibake) becomes UTF-8 byte pieces instead of ``<unk>``, and decodes back.
- ``allow_whitespace_only_pieces=True``: runs of spaces become one piece instead of many.

The one character that cannot round-trip is U+2581 ``▁`` itself (sentencepiece's whitespace
meta symbol): it decodes as a space. It does not occur in the corpora.

Special ids are fixed (unk 0, bos 1, eos 2, pad 3) for every model, recorded in
``tokenizer.json`` next to the model files, and checked again on load. Pad is deliberately not 0.

A model file says what the tokenizer does, not where it was made: sentencepiece records the
output path it was trained to (``trainer_spec.model_prefix``), which is cleared before the
file is kept, so the same training text and settings give byte-identical files in every run
directory - two runs of one config that differ only in ``training.seed`` share one tokenizer
and can be decoded together as an ensemble. :meth:`Tokenizer.fingerprint` hashes the models
without that field, so files written before it was cleared compare equal too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from translate.config import ConfigError, TokenizerConfig
from translate.errors import TranslateError

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2
PAD_ID = 3

META_FILE = "tokenizer.json"
FORMAT_VERSION = 1
# Training is a one-off and runs next to data loading; encoding batches is fast enough with two.
NUM_THREADS = 2
# Below this many sentences, one call per sentence: sentencepiece's batch path starts and
# joins threads on every call, which costs more than it saves on the few sentences a served
# request brings, and far more when the cores are busy decoding (docs/serve.md#measured).
THREADED_MIN = 32


class TokenizerError(TranslateError, ValueError):
    """A tokenizer directory that is missing, incomplete or corrupt; the message names the path."""


def _train_options(cfg: TokenizerConfig, vocab_size: int) -> dict[str, Any]:
    return {
        "model_type": cfg.model_type,
        "vocab_size": vocab_size,
        "character_coverage": cfg.character_coverage,
        "byte_fallback": cfg.byte_fallback,
        "unk_id": UNK_ID,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
        "pad_id": PAD_ID,
        "normalization_rule_name": "identity",
        "remove_extra_whitespaces": False,
        "add_dummy_prefix": True,
        "allow_whitespace_only_pieces": True,
        "input_sentence_size": cfg.input_sentence_size,
        "shuffle_input_sentence": True,
        "num_threads": min(NUM_THREADS, os.cpu_count() or 1),
        "minloglevel": 2,
    }


def _train_model(
    cfg: TokenizerConfig,
    texts: Callable[[], Iterable[str]],
    prefix: Path,
    what: str,
    log: Callable[[str], None],
) -> int:
    """Train one model at ``prefix``.model; returns its vocabulary size.

    A small corpus cannot fill a large vocabulary. Rather than fail (sentencepiece's default),
    we retrain with ``hard_vocab_limit=False`` so the vocabulary becomes as large as the corpus
    supports and say so; the real size is recorded in tokenizer.json and drives the model's
    embedding sizes. A vocabulary too small for the alphabet (+ 256 byte pieces) is a config
    error: we name the size that would work.
    """
    opts = _train_options(cfg, cfg.vocab_size)
    start = time.perf_counter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_nonempty(texts())), model_prefix=str(prefix), **opts
        )
    except RuntimeError as err:
        msg = str(err)
        small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
        if small:
            raise ConfigError(
                f"tokenizer.vocab_size: {cfg.vocab_size} is too small for the {what} corpus; "
                f"it needs at least {small.group(2)} pieces (its characters"
                f"{' + 256 byte-fallback pieces' if cfg.byte_fallback else ''} + 4 specials)"
            ) from None
        if "Vocabulary size too high" not in msg:
            raise
        limit = re.search(r"value <= (\d+)", msg)
        log(
            f"tokenizer: the {what} corpus supports at most "
            f"{limit.group(1) if limit else 'fewer'} pieces, not tokenizer.vocab_size="
            f"{cfg.vocab_size}; training with a soft vocabulary limit instead"
        )
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_nonempty(texts())),
            model_prefix=str(prefix),
            hard_vocab_limit=False,
            **opts,
        )
    size = _keep_content_only(Path(f"{prefix}.model"))
    log(
        f"tokenizer: trained {what} {cfg.model_type} model, {size} pieces "
        f"in {time.perf_counter() - start:.1f}s -> {prefix}.model"
    )
    return size


# TrainerSpec fields that record where a model was trained (its output path and input
# files), not anything encoding or decoding reads.
_WHERE_TRAINED = ("model_prefix", "input")


def _content(proto_bytes: bytes) -> bytes:
    """A serialized sentencepiece model without the fields that say where it was trained.

    sentencepiece's own protobuf schema (``sentencepiece_model_pb2``, the documented way to
    read and edit a model; protobuf comes with wandb)."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(proto_bytes)
    for name in _WHERE_TRAINED:
        proto.trainer_spec.ClearField(name)
    return proto.SerializeToString(deterministic=True)


def _keep_content_only(path: Path) -> int:
    """Rewrite the model file at ``path`` without its training paths (atomically); returns
    its vocabulary size."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(_content(path.read_bytes()))
    os.replace(tmp, path)
    return spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()


def _nonempty(texts: Iterable[str]) -> Iterable[str]:
    return (t for t in texts if t)


class Tokenizer:
    """Source and target sentencepiece models (the same object when joint).

    ``encode_*`` return pieces only (no bos/eos); batching adds bos/eos where the model needs
    them. ``decode_*`` ignore bos/pad and stop at the first eos, so a raw row of decoder output
    (or a padded ``tgt_out`` row) decodes to the sentence.
    """

    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    pad_id = PAD_ID

    def __init__(
        self, src: spm.SentencePieceProcessor, tgt: spm.SentencePieceProcessor, joint: bool
    ) -> None:
        self.src_model = src
        self.tgt_model = tgt
        self.joint = joint
        self.src_vocab_size = src.get_piece_size()
        self.tgt_vocab_size = tgt.get_piece_size()
        # The model files it was loaded from (None when built from processors in memory):
        # what an error about two tokenizers that differ names.
        self.files: tuple[Path, Path] | None = None

    # ------------------------------------------------------------------ train / save / load

    @classmethod
    def train(
        cls,
        cfg: TokenizerConfig,
        src_texts: Sequence[str],
        tgt_texts: Sequence[str],
        out_dir: Path,
        log: Callable[[str], None] = print,
    ) -> Tokenizer:
        """Train on the training split and write the models + tokenizer.json to ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        meta_path = out_dir / META_FILE
        meta_path.unlink(missing_ok=True)  # written last: its presence marks a complete dir
        if cfg.joint:
            size = _train_model(
                cfg, lambda: _chain(src_texts, tgt_texts), out_dir / "spm", "joint", log
            )
            files = {"src_model": "spm.model", "tgt_model": "spm.model"}
            sizes = {"src_vocab_size": size, "tgt_vocab_size": size}
        else:
            src_size = _train_model(cfg, lambda: iter(src_texts), out_dir / "src", "source", log)
            tgt_size = _train_model(cfg, lambda: iter(tgt_texts), out_dir / "tgt", "target", log)
            files = {"src_model": "src.model", "tgt_model": "tgt.model"}
            sizes = {"src_vocab_size": src_size, "tgt_vocab_size": tgt_size}
        meta = {
            "format_version": FORMAT_VERSION,
            "joint": cfg.joint,
            "model_type": cfg.model_type,
            "requested_vocab_size": cfg.vocab_size,
            **sizes,
            **files,
            "unk_id": UNK_ID,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
            "pad_id": PAD_ID,
            "byte_fallback": cfg.byte_fallback,
            "character_coverage": cfg.character_coverage,
            "normalization": "identity",
            "sentencepiece_version": spm.__version__,
        }
        tmp = meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, meta_path)
        return cls.load(out_dir)

    @classmethod
    def load(cls, out_dir: Path) -> Tokenizer:
        """Load a directory written by :meth:`train`; any problem names the offending path."""
        out_dir = Path(out_dir)
        meta_path = out_dir / META_FILE
        if not out_dir.is_dir():
            raise TokenizerError(f"{out_dir}: tokenizer directory not found")
        if not meta_path.is_file():
            raise TokenizerError(
                f"{meta_path}: missing; {out_dir} is not a complete tokenizer directory "
                "(was training interrupted?)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            src_file, tgt_file = meta["src_model"], meta["tgt_model"]
            joint = bool(meta["joint"])
            ids = {k: int(meta[k]) for k in ("unk_id", "bos_id", "eos_id", "pad_id")}
        except (ValueError, KeyError, TypeError) as err:
            raise TokenizerError(f"{meta_path}: corrupt tokenizer metadata ({err!r})") from None
        expected = {"unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID}
        if ids != expected:
            raise TokenizerError(f"{meta_path}: special ids {ids} differ from the fixed {expected}")
        src = _load_model(out_dir / src_file)
        tgt = src if tgt_file == src_file else _load_model(out_dir / tgt_file)
        for model, path in ((src, out_dir / src_file), (tgt, out_dir / tgt_file)):
            got = {
                "unk_id": model.unk_id(),
                "bos_id": model.bos_id(),
                "eos_id": model.eos_id(),
                "pad_id": model.pad_id(),
            }
            if got != expected:
                raise TokenizerError(f"{path}: special ids {got} differ from the fixed {expected}")
        tok = cls(src, tgt, joint)
        tok.files = (out_dir / src_file, out_dir / tgt_file)
        for key, size in (("src_vocab_size", tok.src_vocab_size),
                          ("tgt_vocab_size", tok.tgt_vocab_size)):
            if key in meta and int(meta[key]) != size:
                raise TokenizerError(
                    f"{meta_path}: {key}={meta[key]} but the model file has {size} pieces"
                )
        return tok

    # ------------------------------------------------------------------ encode / decode

    def encode_src(self, texts: Sequence[str], num_threads: int = NUM_THREADS) -> list[list[int]]:
        return _encode(self.src_model, texts, num_threads)

    def encode_tgt(self, texts: Sequence[str], num_threads: int = NUM_THREADS) -> list[list[int]]:
        return _encode(self.tgt_model, texts, num_threads)

    def encode_src_arrays(self, texts: Sequence[str], num_threads: int = NUM_THREADS,
                          ) -> list[np.ndarray]:
        """:meth:`encode_src` as one int32 array per row: no Python int per token, so
        flattening a block of rows into the stored arrays is one ``np.concatenate``."""
        return _encode(self.src_model, texts, num_threads, "numpy")

    def encode_tgt_arrays(self, texts: Sequence[str], num_threads: int = NUM_THREADS,
                          ) -> list[np.ndarray]:
        return _encode(self.tgt_model, texts, num_threads, "numpy")

    def fingerprint(self) -> str:
        """A hash of what the models do (pieces, scores, types, normalizer, the training
        settings that shape encoding; not where they were trained): caches of encoded text
        are keyed on it, and two tokenizers with one fingerprint encode every text alike."""
        sha = hashlib.sha256(b"joint" if self.joint else b"separate")
        for model in (self.src_model, self.tgt_model):
            sha.update(_content(model.serialized_model_proto()))
        return sha.hexdigest()[:20]

    def differs_from(self, other: Tokenizer) -> tuple[str, str] | None:
        """None when both encode and decode every text alike (the fingerprints agree); else
        the first pair of model files (source, then target) whose models differ."""
        if self.fingerprint() == other.fingerprint():
            return None
        pairs = ((self.src_model, other.src_model, 0), (self.tgt_model, other.tgt_model, 1))
        side = next((i for a, b, i in pairs if _content(a.serialized_model_proto())
                     != _content(b.serialized_model_proto())), 0)
        names = ("source model", "target model")
        return tuple(str(t.files[side]) if t.files else f"a {names[side]} in memory"
                     for t in (self, other))

    def decode_src(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return _decode(self.src_model, ids)

    def decode_tgt(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return _decode(self.tgt_model, ids)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(joint={self.joint}, src_vocab_size={self.src_vocab_size}, "
            f"tgt_vocab_size={self.tgt_vocab_size})"
        )


def _chain(a: Iterable[str], b: Iterable[str]) -> Iterable[str]:
    yield from a
    yield from b


def changed_settings(out_dir: Path, cfg: TokenizerConfig) -> list[str]:
    """The settings of ``cfg`` that differ from those the tokenizer in ``out_dir`` was
    trained with, as ``"tokenizer.NAME: trained X, asked Y"`` (only what its metadata
    records; ``input_sentence_size`` and ``max_tokens`` do not change the pieces' meaning)."""
    meta = json.loads((Path(out_dir) / META_FILE).read_text(encoding="utf-8"))
    asked = {"model_type": cfg.model_type, "requested_vocab_size": cfg.vocab_size,
             "joint": cfg.joint, "byte_fallback": cfg.byte_fallback,
             "character_coverage": cfg.character_coverage}
    names = {"requested_vocab_size": "vocab_size"}
    return [f"tokenizer.{names.get(k, k)}: trained {meta[k]!r}, asked {v!r}"
            for k, v in asked.items() if k in meta and meta[k] != v]


def _load_model(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise TokenizerError(f"{path}: sentencepiece model file missing")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as err:
        raise TokenizerError(f"{path}: not a readable sentencepiece model ({err})") from None
    return sp


def _encode(sp: spm.SentencePieceProcessor, texts: Sequence[str],
            num_threads: int = NUM_THREADS, return_type: str | None = None) -> list:
    if isinstance(texts, str):
        raise TypeError("encode_* takes a sequence of strings, not a single string")
    # Many sentences: one call, sentencepiece's C++ batch path, parallel over sentences.
    # return_type None gives lists of int ids, "numpy" an int32 array per sentence.
    if len(texts) < THREADED_MIN:
        return [sp.encode(text, return_type=return_type) for text in texts]
    return sp.encode(list(texts), num_threads=num_threads, return_type=return_type)


def _decode(sp: spm.SentencePieceProcessor, ids: Sequence[Sequence[int]]) -> list[str]:
    if hasattr(ids, "tolist"):  # a tensor / array of rows
        ids = ids.tolist()
    rows = []
    for row in ids:
        if hasattr(row, "tolist"):
            row = row.tolist()
        clean = []
        for i in row:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (BOS_ID, PAD_ID):
                clean.append(i)
        rows.append(clean)
    if not rows:
        return []  # sp.decode([]) would return "" (it reads [] as one empty sentence)
    if len(rows) < THREADED_MIN:
        return [sp.decode(row) for row in rows]
    return sp.decode(rows, num_threads=NUM_THREADS)
