"""The encoded corpus on disk: the same batches as in-memory encoding, a cache that is hit
when nothing changed, missed when the corpus or tokenizer changed, and rebuilt when a file
was cut short or damaged; on real Multi30k / Tatoeba text."""

from __future__ import annotations

import functools
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import tiny_config
from translate import config
from translate.config import TokenizerConfig
from translate.data import encoding
from translate.data.batching import BatchSampler, collate, encode_split
from translate.data.encoded import check_entry
from translate.data.schema import TextColumn, columns, make_dataset, sample_columns
from translate.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from translate.runs.rundir import RunDir
from translate.search import shortlist
from translate.training.prepare import prepare

LABELS = ["captions", "general"]
SPECIAL = {"pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID}
MAX_LEN = 20  # short enough that real captions get cut


def _lines(path: Path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:n]


@pytest.fixture(scope="module")
def dataset(multi30k: Path):
    src, tgt = _lines(multi30k / "train.de", 3000), _lines(multi30k / "train.en", 3000)
    src[5] = ""  # an empty source: collate turns it into [eos], the lengths count it as 1
    domains = [["captions"] if i % 3 else (["captions", "general"] if i % 2 else [])
               for i in range(len(src))]
    return make_dataset(src, tgt, domains)


@pytest.fixture(scope="module")
def tok(dataset, tmp_path_factory) -> Tokenizer:
    src, tgt = TextColumn(dataset, "src")[:], TextColumn(dataset, "tgt")[:]
    return Tokenizer.train(TokenizerConfig(vocab_size=600), src, tgt,
                           tmp_path_factory.mktemp("tok"), log=lambda _: None)


def _encode(dataset, tok, cache: Path, logs: list[str] | None = None, corpus_key="k",
            workers: int = 0):
    return encoding.encode_corpus(
        {"train": dataset}, corpus_key, tok.fingerprint(),
        # The array encoders, as translate.training.prepare uses them; encode_split (the comparison
        # below) goes through the list ones.
        functools.partial(tok.encode_src_arrays, num_threads=1),
        functools.partial(tok.encode_tgt_arrays, num_threads=1),
        tok.src_vocab_size, LABELS, MAX_LEN, cache, workers=workers,
        log=(logs if logs is not None else []).append)


@pytest.fixture(scope="module")
def mapped(dataset, tok, tmp_path_factory):
    """Encoded by two forked workers in blocks of 700 rows (the last one partial)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(encoding, "BLOCK_ROWS", 700)
    try:
        splits, report = _encode(dataset, tok, tmp_path_factory.mktemp("cache"), workers=2)
    finally:
        patch.undo()
    return splits["train"], report


def test_mapped_split_gives_the_batches_of_the_in_memory_split(dataset, tok, mapped):
    split, report = mapped
    memory = encode_split(dataset, tok, LABELS, MAX_LEN)
    assert report["cache_hit"] is False and len(split) == len(memory) == 3000
    assert list(split.src_lens) == memory.src_lens and list(split.tgt_lens) == memory.tgt_lens
    assert split.src_ids[5] == [] and split.src_lens[5] == 1
    assert (split.n_truncated_src, split.n_truncated_tgt) == (
        memory.n_truncated_src, memory.n_truncated_tgt)
    assert split.n_truncated_src > 0 and split.n_truncated_tgt > 0
    assert list(split.label_ids) == memory.label_ids and split.n_labels == 2
    assert split.src_ids[-1] == memory.src_ids[-1] and split.tgt_ids[100:110] == \
        memory.tgt_ids[100:110]
    with pytest.raises(IndexError):
        split.src_ids[3000]
    a = BatchSampler(split.src_lens, split.tgt_lens, "tokens", 600, seed=3).batches(1)
    b = BatchSampler(memory.src_lens, memory.tgt_lens, "tokens", 600, seed=3).batches(1)
    assert a == b
    for indices in a:
        got, want = collate(split, indices, **SPECIAL), collate(memory, indices, **SPECIAL)
        for field in ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths", "domains",
                      "indices"):
            assert torch.equal(getattr(got, field), getattr(want, field)), field
        assert got.ntokens == want.ntokens
    # 2 bytes a piece (uint16) plus an int64 offset a row and side, plus the labels
    pieces = sum(map(len, memory.src_ids)) + sum(map(len, memory.tgt_ids))
    assert report["bytes"] < 2 * pieces + 8 * 3 * (3000 + 1) + 3 * 3000


def test_second_encoding_hits_the_cache_and_a_damaged_file_is_rebuilt(dataset, tok, tmp_path):
    first, report = _encode(dataset, tok, tmp_path)
    assert report["cache_hit"] is False
    entry = Path(report["path"])
    again, report = _encode(dataset, tok, tmp_path)
    assert report["cache_hit"] is True and again["train"].src_ids[7] == first["train"].src_ids[7]
    ids = entry / "train.src.ids"
    want = ids.read_bytes()
    damage = {
        "cut": lambda: ids.write_bytes(want[:-3]),  # a copy or a disk that stopped short
        "flipped": lambda: ids.write_bytes(bytes([want[0] ^ 1]) + want[1:]),  # same size
        "interrupted": lambda: (entry / "manifest.json").unlink(),  # killed before the end
    }
    for what, harm in damage.items():
        harm()
        assert check_entry(entry, entry.name.removeprefix("encoded-"))[0] is None, what
        logs: list[str] = []
        rebuilt, report = _encode(dataset, tok, tmp_path, logs)
        assert report["cache_hit"] is False, what
        assert any("rebuilding the encoded corpus" in line for line in logs), what
        assert ids.read_bytes() == want, what
        assert rebuilt["train"].src_ids[:50] == first["train"].src_ids[:50]


def test_changed_corpus_or_tokenizer_encodes_again(dataset, tok, tmp_path):
    _, first = _encode(dataset, tok, tmp_path)
    _, other_corpus = _encode(dataset, tok, tmp_path, corpus_key="other")
    assert other_corpus["cache_hit"] is False and other_corpus["path"] != first["path"]
    src, tgt = TextColumn(dataset, "src")[:1000], TextColumn(dataset, "tgt")[:1000]
    retrained = Tokenizer.train(TokenizerConfig(vocab_size=500), src, tgt, tmp_path / "tok",
                                log=lambda _: None)
    assert retrained.fingerprint() != tok.fingerprint()
    _, other_tok = _encode(dataset, retrained, tmp_path)
    assert other_tok["cache_hit"] is False and other_tok["path"] != first["path"]


def test_a_new_run_reuses_tokenizer_and_encoded_corpus(multi30k, multidomain, tmp_path):
    raw = tiny_config(multi30k, multidomain, tmp_path / "a", tmp_path / "cache")
    for group, n in (("train", 300), ("valid", 20), ("test", 20)):
        for source in raw["data"][group]:
            source["max_pairs"] = n
    raw["tokenizer"].update(vocab_size=400, input_sentence_size=400)
    logs: list[str] = []
    first = prepare(config.from_dict(raw), RunDir(tmp_path / "a").create(), log=logs.append)
    # 600 pairs hold 1200 sentences for the joint model: it learns from a sample of 200 pairs
    assert "tokenizer: training on a random sample of 200 of 600 pairs " \
           "(tokenizer.input_sentence_size=400)" in logs
    assert first.report["encoded"]["cache_hit"] is False
    raw["training"]["run_dir"] = str(tmp_path / "b")
    logs.clear()
    second = prepare(config.from_dict(raw), RunDir(tmp_path / "b").create(), log=logs.append)
    assert second.report["encoded"]["cache_hit"] is True
    assert any(line.startswith("tokenizer: reused the unigram model") for line in logs)
    assert (tmp_path / "b" / "tokenizer" / "spm.model").read_bytes() == \
        (tmp_path / "a" / "tokenizer" / "spm.model").read_bytes()
    assert second.splits["train"].tgt_ids[:30] == first.splits["train"].tgt_ids[:30]
    assert second.sources["valid"][:3] == first.sources["valid"][:3]
    # another corpus (fewer pairs): a new tokenizer and a new encoding
    raw["data"]["train"][0]["max_pairs"] = 250
    raw["training"]["run_dir"] = str(tmp_path / "c")
    third = prepare(config.from_dict(raw), RunDir(tmp_path / "c").create(), log=logs.append)
    assert third.report["encoded"]["cache_hit"] is False and len(third.splits["train"]) == 550


def test_input_sentence_size_is_validated(multi30k, multidomain, tmp_path):
    raw = tiny_config(multi30k, multidomain, tmp_path / "run", tmp_path / "cache")
    raw["tokenizer"]["input_sentence_size"] = -1
    with pytest.raises(config.ConfigError, match="tokenizer.input_sentence_size"):
        config.from_dict(raw)


def test_lexical_table_from_disk_in_blocks_equals_the_one_from_lists(dataset, tok, mapped,
                                                                     monkeypatch):
    """Counted over blocks, densely, ranked by slices of rows: the same table as one sparse
    product over all the pairs in lists (the way it was computed before)."""
    split, _ = mapped
    memory = encode_split(dataset, tok, LABELS, MAX_LEN)
    vocab = tok.src_vocab_size
    monkeypatch.setattr(shortlist, "DENSE_MAX", 0)
    monkeypatch.setattr(shortlist, "BLOCK_ROWS", 10**9)
    whole = shortlist.build_lexical_table(memory.src_ids, memory.tgt_ids, vocab, vocab)
    assert (whole.top[:, 0] >= 0).sum() > 100  # a real table, not an empty one
    monkeypatch.setattr(shortlist, "BLOCK_ROWS", 700)  # 5 blocks, the last one partial
    sparse = shortlist.build_lexical_table(split.src_ids, split.tgt_ids, vocab, vocab)
    monkeypatch.setattr(shortlist, "DENSE_MAX", 1 << 26)
    monkeypatch.setattr(shortlist, "SLICE_ROWS", 50)
    dense = shortlist.build_lexical_table(split.src_ids, split.tgt_ids, vocab, vocab)
    for table in (sparse, dense):
        assert torch.equal(table.top, whole.top) and torch.equal(table.frequent, whole.frequent)
        assert table.sentences == 3000


def test_tokenizer_sample_streams_the_rows_of_a_cache_file(dataset, tmp_path):
    """The sample read record batch by record batch (translate.training.prepare's tokenizer sample)
    equals ``select`` on the same rows, across batch boundaries, and in memory too."""
    path = tmp_path / "train.arrow"
    table = dataset.with_format("arrow")[:]
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=64)  # 47 record batches
    on_disk = datasets.Dataset.from_file(str(path))
    rows = np.sort(np.random.default_rng(5).choice(len(on_disk), 500, replace=False))
    rows[:2] = [63, 64]  # the last row of one batch and the first of the next
    rows.sort()
    want = columns(dataset.select(rows), "src", "tgt")
    assert sample_columns(on_disk, rows, "src", "tgt") == want
    assert sample_columns(dataset, rows, "src", "tgt") == want  # not file-backed: select
    assert len(want[0]) == 500 and want[0][0] == dataset[int(rows[0])]["src"]
