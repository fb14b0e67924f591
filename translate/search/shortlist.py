"""Vocabulary shortlists: decode over the target pieces a batch can plausibly need.

Most of a CPU decoding step is the output projection and the log-softmax over the whole
target vocabulary. For one batch, only a few hundred to a few thousand of its pieces are
plausible. The shortlist of a batch is the union of

* the ``k`` target pieces most associated with each source piece of the batch, by a lexical
  table learned from the training data (:func:`build_lexical_table`),
* the ``frequent`` most frequent target pieces of the training data (function words,
  punctuation: needed whatever the source says),
* bos, eos, unk and pad. Search bans pad and bos every step, so they are never produced;
  they are kept so that the search's special ids have a place in the restricted space.

Search then runs unchanged on a view of the model (:class:`RestrictedModel`) whose logits
cover only the shortlist: it works in the shortlist's index space, and the results are
mapped back to vocabulary ids. Its scores are log-probabilities *over the shortlist*
(log-softmax over the restricted logits), so callers say which space they were taken over.

**Why Dice over the encoded training corpus** (and not the model's attention): the table is
one pass of co-occurrence counting over the sentence pairs (a scatter-add of every distinct
(source, target) piece pair of each sentence pair: linear in the corpus, with no sort of
the pairs), exactly reproducible, and independent of the model's quality: a short or
averaged run, or one whose attention is diffuse, gets the same table, and it can be built
for an old run from its data alone without running the model over the training set.
Sentence-level Dice, ``2 c(s, t) / (c(s) + c(t))`` with ``c`` counting sentence pairs, ranks
a target piece by how often it appears *together with* the source piece relative to how
often either appears; PMI
would rank rare pairs seen once together above everything else, and raw co-occurrence would
rank the frequent pieces (already in the shortlist) first.

Pure data: ids in, tensors out. Reading and writing the table is the run directory's job
(:meth:`translate.runs.checkpoint.RunDir.write_shortlist` / ``read_shortlist``).
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LexicalTable", "RestrictedModel", "Shortlist", "build_lexical_table"]

TABLE_VERSION = 1
STORED_K = 100  # columns kept per source piece; inference may use fewer


@dataclass
class LexicalTable:
    """``top[s]``: target ids by decreasing Dice with source id ``s`` (-1 = none);
    ``frequent``: every target id by decreasing training frequency (ties: lower id first)."""

    top: Tensor  # [src_vocab, K] int16/int32
    frequent: Tensor  # [tgt_vocab] int32
    sentences: int = 0

    @property
    def tgt_vocab(self) -> int:
        return self.frequent.numel()

    def state(self) -> dict:
        """Plain data for a ``weights_only`` checkpoint."""
        return {"table_version": TABLE_VERSION, "method": "dice", "top": self.top,
                "frequent": self.frequent, "sentences": self.sentences}

    @classmethod
    def from_state(cls, state: dict, src_vocab: int, tgt_vocab: int) -> LexicalTable:
        """Check a saved table against the run's vocabularies (ValueError says what is off)."""
        if state.get("table_version") != TABLE_VERSION or state.get("method") != "dice":
            raise ValueError(f"unknown shortlist format (version {state.get('table_version')!r}, "
                             f"method {state.get('method')!r})")
        top, frequent = state["top"], state["frequent"]
        if top.dim() != 2 or top.size(0) != src_vocab or frequent.numel() != tgt_vocab:
            raise ValueError(f"table for {top.size(0)} source / {frequent.numel()} target "
                             f"pieces, but the tokenizer has {src_vocab} / {tgt_vocab}")
        return cls(top=top, frequent=frequent, sentences=int(state.get("sentences", 0)))


BLOCK_ROWS = 65_536  # sentence pairs per block of the counts: bounds their memory
DENSE_MAX = 1 << 26  # the most (source x target) counts kept as a dense int32 matrix
SLICE_ROWS = 512  # source pieces ranked at a time
PAIR_CHUNK = 1 << 22  # (source, target) piece codes generated at a time: bounds their memory


def _flat(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """All ids (int64) and the row lengths of ``rows``."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                      count=int(lengths.sum()))
    return ids, lengths


def _blocks(rows: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, lengths) of consecutive blocks of ``BLOCK_ROWS`` rows; a split stored on disk
    (:class:`translate.data.encoded.RaggedColumn`) reads them without Python lists."""
    if hasattr(rows, "blocks"):
        yield from rows.blocks(BLOCK_ROWS)
        return
    for start in range(0, len(rows), BLOCK_ROWS):
        yield _flat(rows[start:start + BLOCK_ROWS])


def _incidence(ids: np.ndarray, lengths: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(sentence index, piece id) of each distinct piece of each sentence, sorted."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"piece ids must lie in [0, {vocab})")
    dtype = np.int32 if len(lengths) * vocab < 2**31 else np.int64
    sent = np.repeat(np.arange(len(lengths), dtype=dtype), lengths)
    code = np.sort(sent * dtype(vocab) + ids.astype(dtype))  # np.unique hashes: far slower
    code = code[np.concatenate([[True], code[1:] != code[:-1]])] if code.size else code
    return code // vocab, code % vocab


def _pair_codes(src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray],
                n: int, tgt_vocab: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """``s * tgt_vocab + t`` for every distinct source piece ``s`` and distinct target piece
    ``t`` of each of the ``n`` sentence pairs, in chunks of about ``PAIR_CHUNK`` codes.

    Generated with repeats and one gather (no sparse product, no sort of the pairs), source
    piece by source piece, so that counting them is a scatter-add into one row of the
    counts at a time (cache-friendly): linear in the pairs with a small constant. ``dtype``
    (int32 when the codes fit) halves the memory traffic, which is most of the time."""
    (s_sent, s_id), (t_sent, t_id) = src, tgt
    small = s_id.astype(np.uint16) if s_id.size and s_id.max() < 1 << 16 else s_id
    by_piece = np.argsort(small, kind="stable")  # uint16: a radix sort
    s_sent, s_id, t_id = s_sent[by_piece], s_id[by_piece].astype(dtype), t_id.astype(dtype)
    t_n = np.bincount(t_sent, minlength=n).astype(dtype)  # distinct target pieces a sentence
    t_begin = np.cumsum(t_n, dtype=dtype) - t_n
    rep = t_n[s_sent]  # codes each source entry makes
    ends = np.cumsum(rep, dtype=np.int64)
    e0 = 0
    while e0 < len(s_id):
        done = int(ends[e0 - 1]) if e0 else 0
        e1 = max(e0 + 1, int(np.searchsorted(ends, done + PAIR_CHUNK, side="right")))
        r = rep[e0:e1]
        first = np.repeat(t_begin[s_sent[e0:e1]] - (np.cumsum(r, dtype=dtype) - r), r)
        first += np.arange(first.size, dtype=dtype)
        yield np.repeat(s_id[e0:e1] * dtype.type(tgt_vocab), r) + t_id[first]
        e0 = e1


def _run_lengths(codes: np.ndarray, counts: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct codes and the summed counts of each (count 1 each when None)."""
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    start = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
    if counts is None:
        summed = np.diff(np.append(start, codes.size))
    else:
        summed = np.add.reduceat(counts[order], start)
    return codes[start], summed.astype(np.int64)


class _Counts:
    """The co-occurrence counts ``c(s, t)`` summed over blocks of sentence pairs.

    A dense int32 matrix when the two vocabularies allow (8k x 8k: 256 MB, whatever the
    corpus size; a sparse sum would hold one entry per co-occurring pair, tens of millions on
    long sentences, and sort them again for every block); sorted sparse codes otherwise,
    merged once per block.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int) -> None:
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.dense = (torch.zeros(src_vocab * tgt_vocab, dtype=torch.int32)
                      if src_vocab * tgt_vocab <= DENSE_MAX else None)
        self.codes, self.joint = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.ones = torch.ones(0, dtype=torch.int32)

    def add(self, chunks: Iterator[np.ndarray]) -> None:
        """Count every code of ``chunks`` (one block of sentence pairs) once."""
        pending = [self.codes], [self.joint]
        for codes in chunks:
            if self.dense is not None:
                if self.ones.numel() < codes.size:
                    self.ones = torch.ones(codes.size, dtype=torch.int32)
                self.dense.index_add_(0, torch.from_numpy(codes), self.ones[:codes.size])
            else:
                for part, value in zip(pending, _run_lengths(codes), strict=True):
                    part.append(value)
        if self.dense is None and len(pending[0]) > 1:
            self.codes, self.joint = _run_lengths(np.concatenate(pending[0]),
                                                  np.concatenate(pending[1]))

    def slices(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(row, col, count) of the nonzero counts, sorted by (row, col), in slices of rows."""
        if self.dense is None:
            yield (self.codes // self.tgt_vocab, self.codes % self.tgt_vocab,
                   self.joint.astype(np.float64))
            return
        matrix = self.dense.view(self.src_vocab, self.tgt_vocab)
        for r0 in range(0, self.src_vocab, SLICE_ROWS):
            part = matrix[r0:r0 + SLICE_ROWS]
            rows, cols = part.nonzero(as_tuple=True)
            yield ((rows + r0).numpy(), cols.numpy(),
                   part[rows, cols].numpy().astype(np.float64))


def _fill_top(top: torch.Tensor, row: np.ndarray, col: np.ndarray, joint: np.ndarray,
              src_count: np.ndarray, tgt_count: np.ndarray) -> None:
    """Write the best ``top.size(1)`` targets of each source row present in ``row``.

    ``row`` must be sorted and hold every entry of its rows: the ranking is per row. Only
    the entries at or above their row's k-th best Dice (ties kept) are sorted."""
    k = top.size(1)
    dice = 2 * joint / (src_count[row] + tgt_count[col])
    keep = np.ones(row.size, bool)
    edges = np.flatnonzero(np.diff(row)) + 1
    for a, b in zip([0, *edges.tolist()], [*edges.tolist(), row.size], strict=True):
        if b - a > k:
            part = dice[a:b]
            keep[a:b] = part >= np.partition(part, b - a - k)[b - a - k]
    sel = np.flatnonzero(keep)
    row, col, joint, dice = row[sel], col[sel], joint[sel], dice[sel]
    order = np.lexsort((col, -joint, -dice, row))  # by row, then best first
    r = row[order]
    first = np.concatenate([[True], r[1:] != r[:-1]])
    rank = np.arange(r.size) - np.maximum.accumulate(np.where(first, np.arange(r.size), 0))
    picked = order[rank < k]
    top[torch.from_numpy(row[picked]), torch.from_numpy(rank[rank < k])] = torch.from_numpy(
        col[picked]).to(top.dtype)


def build_lexical_table(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]],
                        src_vocab: int, tgt_vocab: int, k: int = STORED_K) -> LexicalTable:
    """Sentence-level Dice between every source and target piece; the top ``k`` per source.

    Ties in Dice go to the pair seen together more often, then to the lower target id, so
    the table is the same on every machine. The counts are exact integers summed over blocks
    of sentence pairs and ranked a slice of source pieces at a time, so the memory does not
    grow with the corpus.
    """
    if len(src_ids) != len(tgt_ids):
        raise ValueError(f"{len(src_ids)} source rows but {len(tgt_ids)} target rows")
    n = len(src_ids)
    src_count = np.zeros(src_vocab, np.int64)  # sentences holding each piece
    tgt_count = np.zeros(tgt_vocab, np.int64)
    tokens = np.zeros(tgt_vocab, np.int64)
    counts = _Counts(src_vocab, tgt_vocab)
    code_dtype = np.dtype(np.int32 if src_vocab * tgt_vocab < 2**31 else np.int64)
    for (s_ids, s_len), (t_ids, t_len) in zip(_blocks(src_ids), _blocks(tgt_ids), strict=True):
        src, tgt = _incidence(s_ids, s_len, src_vocab), _incidence(t_ids, t_len, tgt_vocab)
        src_count += np.bincount(src[1], minlength=src_vocab)
        tgt_count += np.bincount(tgt[1], minlength=tgt_vocab)
        tokens += np.bincount(t_ids, minlength=tgt_vocab)
        if src[0].size and tgt[0].size:
            counts.add(_pair_codes(src, tgt, len(s_len), tgt_vocab, code_dtype))
    dtype = torch.int16 if tgt_vocab <= torch.iinfo(torch.int16).max else torch.int32
    top = torch.full((src_vocab, k), -1, dtype=dtype)
    for row, col, joint in counts.slices():
        if row.size:
            _fill_top(top, row, col, joint, src_count, tgt_count)
    frequent = torch.from_numpy(np.argsort(-tokens, kind="stable").astype(np.int32))
    return LexicalTable(top=top, frequent=frequent, sentences=n)


class Shortlist:
    """Picks the target ids of a batch from a :class:`LexicalTable`.

    ``k`` translations per source piece (at most the table's width), the ``frequent`` most
    frequent target pieces, and ``special`` ids (bos, eos, unk, pad).
    """

    def __init__(self, table: LexicalTable, k: int, frequent: int,
                 special: Sequence[int]) -> None:
        if k < 0 or frequent < 0:
            raise ValueError(f"shortlist sizes must be >= 0, got k={k}, frequent={frequent}")
        self.table, self.k, self.frequent = table, k, frequent
        self.top = table.top[:, :k].long()
        self.base = torch.zeros(table.tgt_vocab, dtype=torch.bool)
        self.base[table.frequent[:frequent].long()] = True
        self.base[torch.tensor(list(special), dtype=torch.long)] = True

    def select(self, src_rows: Sequence[Sequence[int]]) -> Tensor:
        """Sorted target ids (int64, CPU) for a batch of source rows."""
        mask = self.base.clone()
        src = torch.tensor(sorted({i for r in src_rows for i in r}), dtype=torch.long)
        if src.numel() and self.k:
            cand = self.top[src].view(-1)
            mask[cand[cand >= 0]] = True
        return mask.nonzero().view(-1)

    def restrict(self, model: nn.Module, src_rows: Sequence[Sequence[int]],
                 device: torch.device) -> RestrictedModel:
        return RestrictedModel(model, self.select(src_rows).to(device))


# Int8 output layers' unpacked weights and biases (weights do not change at inference).
_UNPACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _rows_of_linear(proj: nn.Module, ids: Tensor) -> Callable[[Tensor], Tensor]:
    """A function computing only output rows ``ids`` of the linear layer ``proj``.

    Float layers: ``F.linear`` over the selected rows (under autocast it casts them, as the
    full layer does). Dynamically quantized int8 layers: a quantized layer over the selected
    int8 rows (same scale and zero point), so the int8 model keeps int8 kernels. A shortlist
    holding every id uses ``proj`` itself: no copy, and the very same logits.
    """
    weight = getattr(proj, "weight", None)
    if ids.numel() == getattr(proj, "out_features", -1) and bool(
            (ids == torch.arange(ids.numel(), device=ids.device)).all()):
        return proj
    if isinstance(proj, nn.Linear):
        rows = weight.index_select(0, ids)
        bias = None if proj.bias is None else proj.bias.index_select(0, ids)
        device = rows.device.type
        if torch.is_autocast_enabled(device):
            # Autocast caches its casts of parameters, not of these copied rows: cast once
            # here, not at every decoding step (the product is the same: autocast would cast
            # the rows to this dtype itself).
            dtype = torch.get_autocast_dtype(device)
            rows = rows.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return functools.partial(F.linear, weight=rows, bias=bias)
    if callable(weight) and hasattr(proj, "set_weight_bias"):  # ao.nn.quantized.dynamic.Linear
        if proj not in _UNPACKED:  # unpacking is costly: once per layer, not per batch
            _UNPACKED[proj] = (weight(), proj.bias())
        qweight, bias = _UNPACKED[proj]
        cpu_ids = ids.cpu()
        # Made with one output row (its constructor packs a zero weight of the given size),
        # then given the real rows: one packing of the shortlist's weights per batch.
        sub = type(proj)(proj.in_features, 1, bias_=bias is not None, dtype=qweight.dtype)
        sub.out_features = ids.numel()
        sub.set_weight_bias(qweight.index_select(0, cpu_ids),
                            None if bias is None else bias.index_select(0, cpu_ids))
        return sub
    raise TypeError(f"cannot restrict an output layer of type {type(proj).__name__}")


class RestrictedModel:
    """A Seq2Seq as search sees it, with the output vocabulary cut down to ``ids``.

    Search only calls ``encode``, ``init_decoder_state``, ``decode_step`` and the train/eval
    switches; ``decode_step`` takes and returns positions in ``ids`` (token ``j`` means
    vocabulary id ``ids[j]``). The restricted output rows are copied once per batch.
    """

    def __init__(self, model: nn.Module, ids: Tensor) -> None:
        self.model, self.ids = model, ids
        self.ids_list: list[int] = ids.tolist()
        self.proj = _rows_of_linear(model.generator.proj, ids)

    # train/eval switches, for search's EvalMode
    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> RestrictedModel:
        self.model.train(mode)
        return self

    def eval(self) -> RestrictedModel:
        return self.train(False)

    def forget_step_cache(self) -> None:
        self.model.forget_step_cache()

    def encode(self, *args, **kwargs):
        return self.model.encode(*args, **kwargs)

    def init_decoder_state(self, enc):
        return self.model.init_decoder_state(enc)

    def decode_step(self, prev_tokens: Tensor, state, enc) -> tuple[Tensor, object, Tensor]:
        """As :meth:`Seq2Seq.decode_step`, in shortlist positions: logits ``[N, len(ids)]``."""
        vec, state, weights = self.model.decoder.step(
            self.ids[prev_tokens], state, enc.states, enc.mask, enc.proj_keys)
        shift = self.model.output_shift(state.domain)
        return self.proj(self.model.generator.query(vec, shift)), state, weights

    def special(self, special: dict[str, int]) -> dict[str, int]:
        """Search's special ids (``bos_id``...) as positions in the shortlist."""
        where = {v: j for j, v in enumerate(self.ids_list)}
        missing = [name for name, v in special.items() if v not in where]
        if missing:
            raise ValueError(f"the shortlist lacks the special ids {missing}")
        return {name: where[v] for name, v in special.items()}

    def to_vocab(self, hyps: list[list]) -> list[list]:
        """Map every hypothesis' tokens from shortlist positions back to vocabulary ids."""
        ids = self.ids_list
        for nbest in hyps:
            for h in nbest:
                h.tokens = [ids[t] for t in h.tokens]
        return hyps
