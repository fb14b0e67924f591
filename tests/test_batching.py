"""Batching on real Multi30k: encoding, collation conventions, token-budget sampler."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from translate.config import TokenizerConfig
from translate.data.batching import (
    Batch,
    BatchSampler,
    EncodedSplit,
    collate,
    encode_sources,
    encode_split,
)
from translate.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

LABELS = ["captions", "general"]


def read_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


@pytest.fixture(scope="module")
def train_ds(multi30k: Path) -> datasets.Dataset:
    src, tgt = read_lines(multi30k / "train.de"), read_lines(multi30k / "train.en")
    # Real labels, made multi-label and partly missing so every domain case occurs.
    domains = [["captions"] if i % 3 else (["captions", "general"] if i % 2 else [])
               for i in range(len(src))]
    return datasets.Dataset.from_dict({"src": src, "tgt": tgt, "domains": domains})


@pytest.fixture(scope="module")
def tok(train_ds: datasets.Dataset, tmp_path_factory) -> Tokenizer:
    """The setting of the padding target: a joint 8k unigram model on all of Multi30k train."""
    out = tmp_path_factory.mktemp("tok")
    cols = train_ds.select_columns(["src", "tgt"]).to_dict()
    return Tokenizer.train(TokenizerConfig(vocab_size=8000), cols["src"], cols["tgt"], out,
                           log=lambda _: None)


@pytest.fixture(scope="module")
def train_split(train_ds, tok) -> EncodedSplit:
    return encode_split(train_ds, tok, LABELS, max_len=256)


def test_encode_split(train_ds, tok, train_split: EncodedSplit):
    assert len(train_split) == len(train_ds) == 29000
    assert train_split.n_labels == 2
    assert train_split.src_ids[0] == tok.encode_src([train_ds[0]["src"]])[0]
    assert train_split.tgt_ids[5] == tok.encode_tgt([train_ds[5]["tgt"]])[0]
    assert train_split.label_ids[1] == [0]
    assert train_split.label_ids[3] == [0, 1]
    assert train_split.label_ids[0] == []
    assert train_split.n_truncated_src == train_split.n_truncated_tgt == 0

    short = encode_split(train_ds.select(range(2000)), tok, LABELS, max_len=8)
    assert max(map(len, short.src_ids)) == 8 and max(map(len, short.tgt_ids)) == 8
    assert short.n_truncated_src == sum(
        len(x) > 8 for x in train_split.src_ids[:2000])
    assert short.n_truncated_tgt > 0


def test_encode_split_respects_selection_and_rejects_unknown_labels(train_ds, tok, train_split):
    picked = train_ds.select([7, 3, 11])
    enc = encode_split(picked, tok, LABELS, max_len=256)
    assert enc.src_ids == [train_split.src_ids[i] for i in (7, 3, 11)]
    assert encode_split(picked, tok, [], max_len=256).n_labels == 0
    with pytest.raises(ValueError, match="general"):
        encode_split(train_ds.select(range(4)), tok, ["captions"], max_len=256)


def test_collate_layout(train_split: EncodedSplit):
    idx = [3, 0, 10, 25]
    b = collate(train_split, idx, PAD_ID, BOS_ID, EOS_ID)
    B = len(idx)
    S = max(len(train_split.src_ids[i]) for i in idx)
    T = max(len(train_split.tgt_ids[i]) for i in idx) + 1
    assert b.src.shape == (B, S) and b.tgt_in.shape == b.tgt_out.shape == (B, T)
    assert b.src.dtype == b.tgt_in.dtype == torch.long and b.src_mask.dtype == torch.bool
    assert b.src_lengths.device.type == "cpu" and b.src_lengths.dtype == torch.int64
    assert b.indices.tolist() == idx
    for r, i in enumerate(idx):
        x, y = train_split.src_ids[i], train_split.tgt_ids[i]
        assert b.src[r, : len(x)].tolist() == x
        assert (b.src[r, len(x):] == PAD_ID).all()
        assert b.tgt_in[r, : len(y) + 1].tolist() == [BOS_ID, *y]
        assert (b.tgt_in[r, len(y) + 1:] == PAD_ID).all()
        assert b.tgt_out[r, : len(y) + 1].tolist() == [*y, EOS_ID]
        assert (b.tgt_out[r, len(y) + 1:] == PAD_ID).all()
        assert b.src_lengths[r] == len(x) and b.tgt_lengths[r] == len(y) + 1
        assert b.src_mask[r].sum() == len(x) and b.tgt_mask[r].sum() == len(y) + 1
    assert b.ntokens == sum(len(train_split.tgt_ids[i]) + 1 for i in idx)
    # domains: row 3 has both labels, row 0 none (masked out of the tagging loss), others one
    assert b.domains.tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    assert b.domains.dtype == torch.float
    assert b.domain_mask.tolist() == [True, False, True, True]


def test_masks_come_from_lengths_not_ids():
    """A real unk (id 0) inside a sentence stays unmasked; pad positions are masked."""
    split = EncodedSplit(
        src_ids=[[UNK_ID, 17, UNK_ID], [UNK_ID]],
        tgt_ids=[[UNK_ID], [25, UNK_ID, UNK_ID, 9]],
        label_ids=[[], []],
        n_labels=0,
    )
    b = collate(split, [0, 1], PAD_ID, BOS_ID, EOS_ID)
    assert b.src_mask.tolist() == [[True, True, True], [True, False, False]]
    assert b.tgt_mask.tolist() == [[True, True, False, False, False], [True] * 5]
    assert b.src.tolist() == [[0, 17, 0], [0, PAD_ID, PAD_ID]]
    assert b.tgt_out[0].tolist() == [0, EOS_ID, PAD_ID, PAD_ID, PAD_ID]
    assert b.domains is None and b.domain_mask is None


def test_empty_source_and_target(tok: Tokenizer):
    enc = encode_sources(tok, ["", "Ein Hund."], max_len=64)
    assert enc.src_ids[0] == [] and enc.src_lens[0] == 1
    b = collate(enc, [0, 1], PAD_ID, BOS_ID, EOS_ID)
    assert b.src[0, 0] == EOS_ID and b.src_lengths.tolist()[0] == 1
    assert (b.src_lengths >= 1).all()
    assert b.tgt_in.tolist() == [[BOS_ID], [BOS_ID]] and b.tgt_out.tolist() == [[EOS_ID]] * 2
    # An empty source can be packed: the encoder side relies on this.
    emb = torch.nn.Embedding(tok.src_vocab_size, 4)(b.src)
    torch.nn.utils.rnn.pack_padded_sequence(emb, b.src_lengths, batch_first=True,
                                            enforce_sorted=False)


def test_batch_to_keeps_src_lengths_on_cpu(train_split):
    b = collate(train_split, [1, 2], PAD_ID, BOS_ID, EOS_ID)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    moved = b.pin_memory().to(device, non_blocking=True)
    assert isinstance(moved, Batch)
    assert moved.src.device.type == device and moved.domains.device.type == device
    assert moved.src_lengths.device.type == "cpu"
    assert torch.equal(moved.tgt_out.cpu(), b.tgt_out) and moved.ntokens == b.ntokens


# --------------------------------------------------------------------------- sampler


@pytest.fixture(scope="module")
def sampler(train_split) -> BatchSampler:
    return BatchSampler(train_split.src_lens, train_split.tgt_lens, "tokens", max_tokens=2000,
                        batch_size=64, shuffle=True, seed=13)


def padded_cost(split: EncodedSplit, batch: list[int]) -> int:
    src, tgt = split.src_lens, split.tgt_lens
    return len(batch) * max(max(src[i], tgt[i] + 1) for i in batch)


def padding_of(split: EncodedSplit, batches: list[list[int]]) -> float:
    src, tgt = split.src_lens, split.tgt_lens
    real = sum(src[i] + tgt[i] + 1 for b in batches for i in b)
    total = sum(len(b) * (max(src[i] for i in b) + max(tgt[i] for i in b) + 1) for b in batches)
    return 1 - real / total


def test_sampler_covers_every_index_once_within_budget(sampler, train_split):
    for epoch in (0, 1):
        batches = sampler.batches(epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(train_split)))
        assert all(padded_cost(train_split, b) <= 2000 for b in batches)


def test_sampler_deterministic_per_seed_and_epoch(sampler, train_split):
    fresh = BatchSampler(train_split.src_lens, train_split.tgt_lens, "tokens", 2000, 64,
                         True, seed=13)
    assert fresh.batches(1) == sampler.batches(1)  # resume rebuilds the same epoch
    assert fresh.batches(0) == sampler.batches(0)
    assert sampler.batches(0) != sampler.batches(1)
    # Not just a new batch order: rows of equal length are regrouped each epoch.
    groups = [{frozenset(b) for b in sampler.batches(e)} for e in (0, 1)]
    assert len(groups[0] & groups[1]) < len(groups[0]) // 2
    other = BatchSampler(train_split.src_lens, train_split.tgt_lens, "tokens", 2000, 64,
                         True, seed=14)
    assert other.batches(0) != sampler.batches(0)


def test_padding_fraction_on_multi30k(sampler, train_split):
    """Length bucketing keeps padding (source + target positions) under 10% at 2000 tokens."""
    frac = sampler.padding_fraction(0)
    assert 0 < frac < 0.10
    assert 1000 < sampler.tokens_per_batch(0) <= 2000
    # Cross-check the sampler's arithmetic against real collated batches.
    real = padded = 0
    for idx in sampler.batches(0)[:20]:
        b = collate(train_split, idx, PAD_ID, BOS_ID, EOS_ID)
        real += int(b.src_mask.sum() + b.tgt_mask.sum())
        padded += b.src_mask.numel() + b.tgt_mask.numel()
    assert real / padded > 0.85
    # Bucketing is what keeps it small: the same budget without sorting pads far more.
    assert padding_of(train_split, sampler.batches(0)) == pytest.approx(frac)
    n_batches = len(sampler.batches(0))
    in_file_order = [b.tolist() for b in torch.arange(len(train_split)).chunk(n_batches)]
    assert frac < padding_of(train_split, in_file_order) / 3


def test_overlong_pair_gets_its_own_batch():
    src_lens = [5, 300, 7, 6, 1, 0]
    tgt_lens = [4, 10, 6, 250, 2, 0]
    s = BatchSampler(src_lens, tgt_lens, "tokens", max_tokens=100, batch_size=1, shuffle=True,
                     seed=0)
    batches = s.batches(3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [1] in batches and [3] in batches


def test_sentence_batches_and_unshuffled_order(train_split):
    s = BatchSampler(train_split.src_lens, train_split.tgt_lens, "sentences", max_tokens=0,
                     batch_size=64, shuffle=True, seed=1)
    batches = s.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(train_split)))
    assert sum(len(b) == 64 for b in batches) == len(batches) - 1  # 29000 = 453*64 + 8
    assert s.padding_fraction(0) < 0.10
    fixed = BatchSampler(train_split.src_lens, train_split.tgt_lens, "tokens", 2000, 64,
                         shuffle=False, seed=1)
    assert fixed.batches(0) == fixed.batches(5)
    with pytest.raises(ValueError, match="batch_type"):
        BatchSampler([1], [1], "words", 10, 10, True, 0)
    with pytest.raises(ValueError, match="lengths"):
        BatchSampler([1, 2], [1], "tokens", 10, 10, True, 0)


def test_inference_batches_cap_sentences_and_tokens_longest_first(tok, multi30k):
    """Inference batches the real test set with the training sampler: at most ``batch_size``
    sentences and ``max_tokens`` padded source positions each, longest batch first, every
    sentence once; an empty line counts as the one eos token collate gives it."""
    from translate.search.decoding import inference_batches

    lines = read_lines(multi30k / "test_2016_flickr.de") + [""]
    split = encode_sources(tok, lines, max_len=256)
    for batch_size, max_tokens in ((128, 0), (128, 2560), (16, 200), (7, 30)):
        batches = inference_batches(split, batch_size, max_tokens)
        assert sorted(i for b in batches for i in b) == list(range(len(lines)))
        widths = [max(split.src_lens[i] for i in b) for b in batches]
        assert widths == sorted(widths, reverse=True)  # longest first, shortest last
        assert all(len(b) <= batch_size for b in batches)
        if max_tokens:
            assert all(len(b) * w <= max_tokens or len(b) == 1
                       for b, w in zip(batches, widths, strict=True))
            assert sum(len(b) < batch_size for b in batches) > 1  # the token cap binds too
        else:
            assert sum(len(b) == batch_size for b in batches) == len(batches) - 1
        # within a batch, ties keep input order: the order is a pure function of the lengths
        for b in batches:
            keyed = [(-split.src_lens[i], i) for i in b]
            assert keyed == sorted(keyed)
    assert inference_batches(split, 16, 0)[-1][-1] == len(lines) - 1  # the empty line
    with pytest.raises(ValueError, match="shuffle"):
        BatchSampler([1], [1], "tokens", 10, longest_first=True)


# --------------------------------------------------------------------------- epoch plan


def reference_batches(src_lens, tgt_lens, batch_type="tokens", max_tokens=2000, batch_size=64,
                      shuffle=True, seed=0, epoch=0, max_sentences=0, longest_first=False,
                      rows=None) -> list[list[int]]:
    """The documented rule, written plainly: sort by (cost, target, source length) with a
    random tie-break drawn from (seed, epoch), fill batches greedily, shuffle their order."""
    src = [max(1, x) for x in src_lens]
    tgt = [y + 1 for y in tgt_lens]
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    idx = list(range(len(src))) if rows is None else [int(i) for i in rows]
    tie = rng.random(len(idx)).tolist() if rng is not None else list(range(len(idx)))
    sign = -1 if longest_first else 1

    def key(k: int) -> tuple:
        i = idx[k]
        return sign * max(src[i], tgt[i]), sign * tgt[i], sign * src[i], tie[k], k

    order = [idx[k] for k in sorted(range(len(idx)), key=key)]
    if batch_type == "sentences":
        out = [order[a:a + batch_size] for a in range(0, len(order), batch_size)]
    else:
        out, current, width = [], [], 0
        cap = max_sentences or len(order)
        for i in order:
            w = max(width, src[i], tgt[i])
            if current and ((len(current) + 1) * w > max_tokens or len(current) == cap):
                out.append(current)
                current, w = [], max(src[i], tgt[i])
            current.append(i)
            width = w
        if current:
            out.append(current)
    return out if rng is None else [out[j] for j in rng.permutation(len(out))]


def test_epoch_plan_equals_the_reference_rule_on_real_lengths(train_split):
    """The array-built plan gives exactly the batches of the plain rule, for training
    (shuffled, resampled rows with repeats), validation, inference (longest first, capped)
    and lengths too wide for the length table (its np.lexsort fallback)."""
    src, tgt = list(train_split.src_lens), list(train_split.tgt_lens)
    draws = np.random.default_rng(7).integers(0, len(src), size=len(src) + 999)

    def rows(epoch: int) -> np.ndarray:  # a resampled epoch: repeats, sorted, as DomainSampler
        return np.sort(draws[: len(src) + 100 * epoch])

    cases = [dict(seed=13, epoch=0), dict(seed=13, epoch=1), dict(seed=2, epoch=4, rows=rows),
             dict(shuffle=False, max_tokens=4000), dict(batch_type="sentences", seed=1),
             dict(shuffle=False, longest_first=True, max_tokens=600, max_sentences=16)]
    for case in cases:
        kw = {k: v for k, v in case.items() if k not in ("epoch", "rows")}
        epoch, fn = case.get("epoch", 0), case.get("rows")
        sampler = BatchSampler(src, tgt, rows=fn, **kw)
        want = reference_batches(src, tgt, rows=None if fn is None else fn(epoch),
                                 epoch=epoch, **kw)
        plan = sampler.batches(epoch)
        assert plan == want, case
        assert plan.rows.dtype == np.int32 and plan.nbytes < 5 * len(plan.rows) + 16 * len(plan)
    factor = 520 // max(src + tgt) + 1  # real lengths scaled beyond the length table
    wide_src, wide_tgt = [factor * x for x in src[:3000]], [factor * y for y in tgt[:3000]]
    budget = 2000 * factor
    plan = BatchSampler(wide_src, wide_tgt, max_tokens=budget, seed=5).batches(2)
    assert plan == reference_batches(wide_src, wide_tgt, max_tokens=budget, seed=5, epoch=2)


def test_epoch_plan_serves_slices_as_the_trainer_reads_them(sampler):
    """Resume skips the first k batches of an epoch and steps take slices of it: the plan
    answers indexing, slices and iteration as the list of batches it replaces did."""
    plan = sampler.batches(1)
    batches = plan.tolist()
    assert sampler.batches(1) is plan  # kept: len() and padding_fraction() do not rebuild
    assert list(plan) == batches and len(plan) == len(batches)
    for k in (0, 5, len(batches) - 2):
        assert plan[k:k + 4] == batches[k:k + 4]
        assert plan[k] == batches[k] and isinstance(plan[k][0], int)
    assert plan[-1] == batches[-1] and plan[len(batches):] == []
    with pytest.raises(IndexError):
        plan[len(batches)]
    plan[0].append(-1)  # a caller's list is its own
    assert plan[0] == batches[0]
