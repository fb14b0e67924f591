"""From text pairs to padded tensor batches: encoding, collation and length-bucketed sampling.

Conventions the model, loss, search and translator rely on:

- Source rows carry pieces only (no bos/eos). An **empty source** (a blank line, or a line
  that tokenizes to nothing) is represented by the single token ``eos``: a length-0 sequence
  cannot go through ``pack_padded_sequence``, and "end of sentence right away" is what an
  empty line means. ``collate`` is the only place this happens (``EncodedSplit.src_lens``
  and the sampler only count it as length 1), so training, validation and inference — all
  batched by ``collate`` — see the same thing.
- Decoder input is ``bos + y``, decoder target ``y + eos``; ``tgt_lengths = len(y) + 1``.
- Masks come from the lengths (:func:`translate.masks.lengths_to_mask`), never from the ids.
- ``src_lengths`` stays on the CPU (``pack_padded_sequence`` wants CPU int64).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from translate.data.epoch_plan import EpochPlan, index_dtype, length_order, token_bounds
from translate.masks import lengths_to_mask

if TYPE_CHECKING:
    import datasets

    from translate.data.tokenizer import Tokenizer


# --------------------------------------------------------------------------- encoding


@dataclass
class EncodedSplit:
    """One split as piece ids (truncated to ``max_len``) plus label indices per row."""

    src_ids: list[list[int]]
    tgt_ids: list[list[int]]
    label_ids: list[list[int]]
    n_labels: int
    n_truncated_src: int = 0
    n_truncated_tgt: int = 0

    def __len__(self) -> int:
        return len(self.src_ids)

    # Computed once: an encoded split is not modified after encode_split.
    @functools.cached_property
    def src_lens(self) -> list[int]:
        """Source lengths as ``collate`` will make them (an empty source counts as 1)."""
        return [max(1, len(x)) for x in self.src_ids]

    @functools.cached_property
    def tgt_lens(self) -> list[int]:
        """Target piece counts (without the added bos/eos)."""
        return [len(y) for y in self.tgt_ids]


def _truncate(rows: list[list[int]], max_len: int) -> int:
    n = 0
    for i, row in enumerate(rows):
        if len(row) > max_len:
            rows[i] = row[:max_len]
            n += 1
    return n


def encode_split(
    ds: datasets.Dataset, tok: Tokenizer, labels: list[str], max_len: int
) -> EncodedSplit:
    """Tokenize a ``{src, tgt, domains}`` dataset in two batched sentencepiece calls.

    Sequences longer than ``max_len`` pieces are cut (and counted, so the caller can report
    it); the training split was already filtered by characters, this only bounds memory.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    wanted = ["src", "tgt"] + (["domains"] if labels and "domains" in ds.column_names else [])
    # One Arrow -> Python conversion per column (iterating ``ds["src"]`` goes row by row,
    # far slower); select_columns keeps any indices mapping from select/shuffle/filter.
    cols = ds.select_columns(wanted).to_dict()
    src_ids = tok.encode_src(cols["src"])
    tgt_ids = tok.encode_tgt(cols["tgt"])
    n_src = _truncate(src_ids, max_len)
    n_tgt = _truncate(tgt_ids, max_len)
    index = {label: i for i, label in enumerate(labels)}
    if "domains" in cols:
        label_ids = []
        for row, names in enumerate(cols["domains"]):
            try:
                label_ids.append(sorted({index[name] for name in names or ()}))
            except KeyError as err:
                raise ValueError(
                    f"row {row}: domain label {err.args[0]!r} is not in the label vocabulary "
                    f"{labels}"
                ) from None
    else:
        label_ids = [[] for _ in range(len(src_ids))]
    return EncodedSplit(src_ids, tgt_ids, label_ids, len(labels), n_src, n_tgt)


def source_split(src_ids: Sequence[Sequence[int]]) -> EncodedSplit:
    """Already-encoded sources as a split with empty targets and no labels (inference).

    Lets search batch its sentences with :func:`collate` and :class:`BatchSampler` like
    training does; the rows are referenced, not copied.
    """
    n = len(src_ids)
    return EncodedSplit(list(src_ids), [[] for _ in range(n)], [[] for _ in range(n)], 0)


def encode_sources(tok: Tokenizer, texts: Sequence[str], max_len: int) -> EncodedSplit:
    """Sources only (inference): empty targets, no labels; batch them with :func:`collate`."""
    src_ids = tok.encode_src(list(texts))
    split = source_split(src_ids)
    split.n_truncated_src = _truncate(split.src_ids, max_len)
    return split


# --------------------------------------------------------------------------- collation


@dataclass
class Batch:
    src: Tensor  # [B, S] long, padded with pad_id
    src_lengths: Tensor  # [B] long, always on the CPU
    src_mask: Tensor  # [B, S] bool, True = real token
    tgt_in: Tensor  # [B, T] long: bos + y
    tgt_out: Tensor  # [B, T] long: y + eos
    tgt_lengths: Tensor  # [B] long: len(y) + 1
    tgt_mask: Tensor  # [B, T] bool
    domains: Tensor | None  # [B, L] float multi-hot; None without labels
    domain_mask: Tensor | None  # [B] bool: row has at least one label
    indices: Tensor  # [B] long: row positions in the split
    ntokens: int  # real target tokens

    def __len__(self) -> int:
        return self.src.size(0)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor except ``src_lengths`` (packing needs it on the CPU)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return dataclasses.replace(
            self,
            src=move(self.src),
            src_mask=move(self.src_mask),
            tgt_in=move(self.tgt_in),
            tgt_out=move(self.tgt_out),
            tgt_lengths=move(self.tgt_lengths),
            tgt_mask=move(self.tgt_mask),
            domains=move(self.domains),
            domain_mask=move(self.domain_mask),
            indices=move(self.indices),
        )

    def pin_memory(self) -> Batch:
        """Page-lock the tensors for async copies (DataLoader's hook); a no-op without CUDA."""
        if not torch.cuda.is_available():
            return self

        def pin(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.pin_memory()

        return dataclasses.replace(
            self,
            src=pin(self.src),
            src_mask=pin(self.src_mask),
            tgt_in=pin(self.tgt_in),
            tgt_out=pin(self.tgt_out),
            tgt_lengths=pin(self.tgt_lengths),
            tgt_mask=pin(self.tgt_mask),
            domains=pin(self.domains),
            domain_mask=pin(self.domain_mask),
            indices=pin(self.indices),
        )


def _padded(rows: list[list[int]], pad_id: int) -> Tensor:
    """``[len(rows), longest]`` int64, each row right-padded with ``pad_id``: one tensor made
    from padded lists (a tensor per row and ``pad_sequence`` cost more per batch)."""
    width = max(map(len, rows))
    return torch.tensor([[*row, *[pad_id] * (width - len(row))] for row in rows],
                        dtype=torch.long)


def collate(
    split: EncodedSplit, indices: Sequence[int], pad_id: int, bos_id: int, eos_id: int
) -> Batch:
    """Pad the rows ``indices`` of ``split`` into a :class:`Batch` (see the module docstring)."""
    if len(indices) == 0:
        raise ValueError("collate needs at least one index")
    idx = [int(i) for i in indices]
    src_rows = [split.src_ids[i] or [eos_id] for i in idx]
    tgt_rows = [split.tgt_ids[i] for i in idx]
    src_lengths = torch.tensor([len(x) for x in src_rows], dtype=torch.long)
    tgt_lengths = torch.tensor([len(y) + 1 for y in tgt_rows], dtype=torch.long)
    src = _padded(src_rows, pad_id)
    tgt_in = _padded([[bos_id, *y] for y in tgt_rows], pad_id)
    tgt_out = _padded([[*y, eos_id] for y in tgt_rows], pad_id)
    domains = domain_mask = None
    if split.n_labels > 0:
        domains = torch.zeros(len(idx), split.n_labels, dtype=torch.float)
        for r, i in enumerate(idx):
            if split.label_ids[i]:
                domains[r, split.label_ids[i]] = 1.0
        domain_mask = domains.sum(dim=1) > 0
    return Batch(
        src=src,
        src_lengths=src_lengths,
        src_mask=lengths_to_mask(src_lengths, src.size(1)),
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        tgt_lengths=tgt_lengths,
        tgt_mask=lengths_to_mask(tgt_lengths, tgt_in.size(1)),
        domains=domains,
        domain_mask=domain_mask,
        indices=torch.tensor(idx, dtype=torch.long),
        ntokens=int(tgt_lengths.sum()),
    )


# --------------------------------------------------------------------------- sampling


class BatchSampler:
    """Length-bucketed batches under a token budget (or of a fixed sentence count).

    ``batch_type="tokens"``: a batch's padded size ``B * max(src_len, tgt_len + 1)`` stays
    within ``max_tokens`` (fairseq / JoeyNMT style; the decoder side counts bos/eos). A single
    pair longer than the budget forms a batch of its own: nothing is ever dropped.

    Padding stays small because rows are sorted by length before being cut into batches; the
    randomness per epoch comes from a random tie-break among equal lengths plus a shuffle of
    the batch order, both drawn from ``(seed, epoch)`` so that an epoch's batches can be
    rebuilt exactly on resume (skip the first k). Without ``shuffle`` (validation, inference)
    the order is the deterministic length order, shortest first, or longest first with
    ``longest_first`` (inference: a batch that does not fit in memory fails at once, not at
    the end of a long input); ``Batch.indices`` maps rows back to the split.

    ``max_sentences`` (``"tokens"`` only; 0 = none) also caps the sentences per batch:
    search keeps per-sentence state (beams, finished hypotheses), so inference bounds both.

    ``rows`` (training only): a function of the epoch giving the row indices that epoch holds,
    repeats allowed (:class:`translate.data.sampling.DomainSampler`); it must depend on the epoch
    alone, so that resume rebuilds the same batches. None: every row once.

    ``batches(epoch)`` is an :class:`~translate.data.epoch_plan.EpochPlan`: it reads like the list
    of batches (index, slice, iterate, compare) but holds a few bytes a pair in arrays.
    """

    def __init__(
        self,
        src_lens: Sequence[int],
        tgt_lens: Sequence[int],
        batch_type: Literal["tokens", "sentences"] = "tokens",
        max_tokens: int = 2000,
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
        *,
        max_sentences: int = 0,
        longest_first: bool = False,
        rows: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        if len(src_lens) != len(tgt_lens):
            raise ValueError(f"{len(src_lens)} source lengths but {len(tgt_lens)} target lengths")
        if batch_type not in ("tokens", "sentences"):
            raise ValueError(f"batch_type must be 'tokens' or 'sentences', got {batch_type!r}")
        if batch_type == "tokens" and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if batch_type == "sentences" and batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if max_sentences < 0:
            raise ValueError(f"max_sentences must be 0 (no cap) or positive, got {max_sentences}")
        if longest_first and shuffle:
            raise ValueError("longest_first orders batches deterministically: use shuffle=False")
        # Sizes as collate builds them: an empty source becomes [eos]; the target gains bos/eos.
        # int32: the lengths are the one per-pair array a training process keeps.
        self.src_lens = np.maximum(np.asarray(src_lens, dtype=np.int32), 1)
        self.tgt_lens = np.asarray(tgt_lens, dtype=np.int32) + 1
        self.batch_type = batch_type
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.max_sentences = max_sentences
        self.longest_first = longest_first
        self.rows = rows
        self._cache: tuple[int, EpochPlan] | None = None

    def __len__(self) -> int:
        """Number of batches in epoch 0 (other epochs differ by at most a few batches)."""
        return len(self.batches(0))

    def _order(self, rng: np.random.Generator | None,
               rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows in length order, with the runs of equal cost along it."""
        src, tgt = self.src_lens, self.tgt_lens
        if rows is not None:
            src, tgt = src[rows], tgt[rows]
        tie = rng.random(len(src)) if rng is not None else None  # None: input order
        order, run_cost, run_len = length_order(src, tgt, tie, descending=self.longest_first)
        return (order if rows is None else rows[order]), run_cost, run_len

    def batches(self, epoch: int) -> EpochPlan:
        """All batches of ``epoch`` (each a list of row indices, built when asked for); the
        same for the same (seed, epoch). The last epoch's plan is kept: read-only, shared."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        rows = None if self.rows is None else np.asarray(self.rows(epoch))
        order, run_cost, run_len = self._order(rng, rows)
        if self.batch_type == "sentences":
            bounds = np.append(np.arange(0, len(order), self.batch_size), len(order))
        else:
            bounds = token_bounds(run_cost, run_len, self.max_tokens,
                                  self.max_sentences or len(order),
                                  descending=self.longest_first)
        perm = rng.permutation(len(bounds) - 1) if rng is not None else None
        plan = EpochPlan(order.astype(index_dtype(len(self.src_lens)), copy=False),
                         bounds.astype(np.int64, copy=False), perm)
        self._cache = (epoch, plan)
        return plan

    def _plan_lengths(self, epoch: int) -> tuple[EpochPlan, np.ndarray, np.ndarray]:
        plan = self.batches(epoch)
        return plan, self.src_lens[plan.rows], self.tgt_lens[plan.rows]

    def padding_fraction(self, epoch: int) -> float:
        """Padded share of all source + target positions in ``epoch``'s batches."""
        plan, src, tgt = self._plan_lengths(epoch)
        if len(plan) == 0:
            return 0.0
        starts, sizes = plan.bounds[:-1], np.diff(plan.bounds)
        widths = (np.maximum.reduceat(src, starts).astype(np.int64)
                  + np.maximum.reduceat(tgt, starts))
        padded = int((sizes * widths).sum())
        real = int(src.sum(dtype=np.int64)) + int(tgt.sum(dtype=np.int64))
        return 0.0 if padded == 0 else 1.0 - real / padded

    def tokens_per_batch(self, epoch: int) -> float:
        """Mean real target tokens (``len(y) + 1``) per batch in ``epoch``."""
        plan, _, tgt = self._plan_lengths(epoch)
        return int(tgt.sum(dtype=np.int64)) / max(1, len(plan))
