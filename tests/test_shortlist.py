"""Vocabulary shortlists: the Dice table by hand, and decoding over a shortlist on the shared
tiny de→en run (real model, real sentences): exact with the whole vocabulary, inside the
shortlist otherwise, for greedy, beam and n-best, fp32 and int8."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

from conftest import needs_cpu_bf16
from translate.config import InferenceConfig
from translate.data.batching import source_split
from translate.inference.translator import PIECES_PER_SENTENCE, Translator
from translate.runs.checkpoint import load_checkpoint
from translate.search import shortlist
from translate.search.decoding import decode_ids, inference_batches
from translate.search.shortlist import LexicalTable, RestrictedModel, Shortlist, build_lexical_table

# Five sentence pairs over source ids 4-7 and target ids 10-14 (think "Hund" 4 -> "dog" 10).
SRC = [[4, 5], [4, 6], [4, 5], [7, 6], [7]]
TGT = [[10, 11], [10, 12], [10, 11, 14], [13, 12], [13, 14, 14]]
SPECIAL = (1, 2, 0, 3)  # bos, eos, unk, pad


def test_dice_table_on_a_hand_made_corpus() -> None:
    """Sentences holding each piece: src 4:3, 5:2, 6:2, 7:2; tgt 10:3, 11-14:2 each.
    Dice(4,10) = 2*3/(3+3) = 1, (4,11) = 2*2/(3+2) = .8, (4,12) = (4,14) = 2/5 = .4 (a tie:
    the lower id first); (5,11) = 1, (5,10) = .8, (5,14) = .5; (6,12) = 1, (6,13) = .5,
    (6,10) = .4; (7,13) = 1, (7,12) = (7,14) = .5."""
    table = build_lexical_table(SRC, TGT, src_vocab=9, tgt_vocab=16, k=4)
    assert table.top[4].tolist() == [10, 11, 12, 14]
    assert table.top[5].tolist() == [11, 10, 14, -1]
    assert table.top[6].tolist() == [12, 13, 10, -1]
    assert table.top[7].tolist() == [13, 12, 14, -1]
    assert (table.top[[0, 1, 2, 3, 8]] == -1).all()  # never seen in the source
    # Frequency counts tokens (14 occurs 3 times, in 2 sentences); ties: lower id first.
    assert table.frequent[:5].tolist() == [10, 14, 11, 12, 13]
    assert sorted(table.frequent.tolist()) == list(range(16))
    # The stored state round-trips and is checked against the vocabulary sizes.
    again = LexicalTable.from_state(table.state(), 9, 16)
    assert torch.equal(again.top, table.top) and torch.equal(again.frequent, table.frequent)
    with pytest.raises(ValueError, match="tokenizer has 9 / 8000"):
        LexicalTable.from_state(table.state(), 9, 8000)


def test_shortlist_is_the_union_of_translations_frequent_and_special_ids() -> None:
    table = build_lexical_table(SRC, TGT, src_vocab=9, tgt_vocab=16, k=4)
    shortlist = Shortlist(table, k=1, frequent=2, special=SPECIAL)
    # specials 0-3, frequent 10 and 14, top-1 of 4 (10) and of 7 (13)
    assert shortlist.select([[4], [7, 7]]).tolist() == [0, 1, 2, 3, 10, 13, 14]
    assert shortlist.select([[8]]).tolist() == [0, 1, 2, 3, 10, 14]  # unseen source piece
    whole = Shortlist(table, k=0, frequent=16, special=SPECIAL)
    assert whole.select([[4]]).tolist() == list(range(16))
    with pytest.raises(ValueError, match="k=-1"):
        Shortlist(table, k=-1, frequent=2, special=SPECIAL)


def reference_table(src, tgt, src_vocab: int, tgt_vocab: int, k: int) -> tuple[list, list]:
    """The Dice table as the module documents it, counted plainly pair by pair."""
    in_src, in_tgt, joint, tokens = Counter(), Counter(), Counter(), Counter()
    for s, t in zip(src, tgt, strict=True):
        s_set, t_set = set(s), set(t)
        in_src.update(s_set)
        in_tgt.update(t_set)
        tokens.update(t)
        joint.update((a, b) for a in s_set for b in t_set)
    ranked = defaultdict(list)
    for (a, b), c in joint.items():
        ranked[a].append((-2 * c / (in_src[a] + in_tgt[b]), -c, b))
    top = [[-1] * k for _ in range(src_vocab)]
    for a, cands in ranked.items():
        for r, (_, _, b) in enumerate(sorted(cands)[:k]):
            top[a][r] = b
    return top, sorted(range(tgt_vocab), key=lambda t: (-tokens[t], t))


def test_table_equals_the_plain_count_on_real_pairs(multi30k: Path, monkeypatch) -> None:
    """Real Multi30k pairs (word ids, rarer words as unk): the vectorised counting gives the
    very table of a plain count, dense or sparse, in one block or summed over many."""
    def ids(lang: str, size: int) -> list[list[int]]:
        lines = multi30k.joinpath(f"train.{lang}").read_text(encoding="utf-8").split("\n")
        rows = [line.lower().split() for line in lines[:3000]]
        common = [w for w, _ in Counter(w for r in rows for w in r).most_common(size - 4)]
        index = {w: i + 4 for i, w in enumerate(common)}
        return [[index.get(w, 0) for w in r] for r in rows]

    src, tgt = ids("de", 1500), ids("en", 1100)
    want_top, want_frequent = reference_table(src, tgt, 1500, 1100, k=20)
    one_block = build_lexical_table(src, tgt, 1500, 1100, k=20)
    assert one_block.top.tolist() == want_top
    assert one_block.frequent.tolist() == want_frequent
    monkeypatch.setattr(shortlist, "BLOCK_ROWS", 700)  # five blocks, several code chunks each
    monkeypatch.setattr(shortlist, "PAIR_CHUNK", 9000)
    assert build_lexical_table(src, tgt, 1500, 1100, k=20).top.tolist() == want_top
    wide = (1 << 13) + 1  # 8193 x 8193 counts: over DENSE_MAX, the sparse sum
    assert wide * wide > shortlist.DENSE_MAX
    sparse = build_lexical_table(src, tgt, wide, wide, k=20)
    assert sparse.top[:1500].tolist() == want_top and (sparse.top[1500:] == -1).all()
    assert sparse.frequent[:1100].tolist() == want_frequent


# --------------------------------------------------------------------------- on a real run


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    torch.set_num_threads(2)
    return Translator.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def src_ids(translator, multi30k: Path) -> list[list[int]]:
    lines = multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    return translator.tokenizer.encode_src(lines[:24])


def _shortlist(translator: Translator, k: int, frequent: int) -> Shortlist:
    tok = translator.tokenizer
    return Shortlist(translator.lexicon, k, frequent,
                     (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id))


def _decode(translator: Translator, src_ids, shortlist, beam: int, n_best: int = 1):
    opts = InferenceConfig(beam_size=beam, n_best=n_best, batch_size=64)
    return decode_ids(translator.model, src_ids, opts, special=translator.special,
                      device=translator.device, shortlist=shortlist).hypotheses


def test_training_writes_a_small_shortlist(trained_run: Path, translator) -> None:
    state = load_checkpoint(trained_run / "shortlist.pt")  # weights_only loading
    assert state["method"] == "dice" and state["sentences"] > 1000
    assert (trained_run / "shortlist.pt").stat().st_size < 1_000_000
    assert translator.lexicon is not None


@pytest.mark.parametrize("beam,n_best", [(1, 1), (3, 3)])
def test_whole_vocabulary_shortlist_equals_the_full_search(translator, src_ids, beam,
                                                           n_best) -> None:
    vocab = translator.tokenizer.tgt_vocab_size
    full = _decode(translator, src_ids, None, beam, n_best)
    whole = _decode(translator, src_ids, _shortlist(translator, 0, vocab), beam, n_best)
    assert whole == full  # tokens, scores and raw log-probs, every n-best entry


@pytest.mark.parametrize("beam,n_best", [(1, 1), (4, 3)])
def test_outputs_lie_in_the_shortlist_and_nbest_is_sorted(translator, src_ids, beam,
                                                          n_best) -> None:
    shortlist = _shortlist(translator, 3, 20)
    allowed = set(shortlist.select(src_ids).tolist())  # one batch: the batch's shortlist
    assert len(allowed) < translator.tokenizer.tgt_vocab_size / 2
    hyps = _decode(translator, src_ids, shortlist, beam, n_best)
    assert len(hyps) == len(src_ids)
    for nbest in hyps:
        assert 1 <= len(nbest) <= n_best
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        for h in nbest:
            assert set(h.tokens) <= allowed and math.isfinite(h.score)
            assert translator.tokenizer.pad_id not in h.tokens


@pytest.mark.parametrize("precision", ["fp32", "int8", pytest.param("bf16", marks=needs_cpu_bf16)])
def test_restricted_logits_are_the_full_logits_of_the_shortlist(trained_run, translator,
                                                                src_ids, precision) -> None:
    model = Translator.load(trained_run, device="cpu", quantize=True).model \
        if precision == "int8" else translator.model
    ids = _shortlist(translator, 3, 20).select(src_ids[:4])
    src = torch.tensor([src_ids[0]])
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype,
                                                enabled=precision == "bf16"):
        view = RestrictedModel(model, ids)  # built under autocast, as decoding builds it
        enc = model.encode(src, torch.tensor([src.size(1)]))
        state = model.init_decoder_state(enc)
        full, _, _ = model.decode_step(torch.tensor([translator.tokenizer.bos_id]), state, enc)
        bos = view.special(translator.special)["bos_id"]
        cut, _, _ = view.decode_step(torch.tensor([bos]), state, enc)
    if precision == "bf16":
        # The shortlist's rows are cast once when the view is made, not at every step...
        assert view.proj.keywords["weight"].dtype == torch.bfloat16
        # ...and give the full layer's bf16 logits (equal here; a GEMM blocked differently on
        # another CPU may move one by a bf16 ulp, 2^-7 relative).
        torch.testing.assert_close(cut.float(), full[:, ids].float(), rtol=2 ** -7, atol=0)
    else:
        torch.testing.assert_close(cut, full[:, ids], rtol=0, atol=1e-5)


def test_translator_switch_and_quantized_shortlist(trained_run, translator, src_ids) -> None:
    texts = translator.tokenizer.decode_src(src_ids[:8])
    on = translator.translate(texts, beam=3, n_best=2)
    off = translator.translate(texts, beam=3, n_best=2, shortlist=False)
    assert {r.scores_over for r in on} == {"shortlist"}
    assert {r.scores_over for r in off} == {"vocabulary"}
    # Log-probabilities over a subset of the vocabulary are never lower for the same output.
    for a, b in zip(on, off, strict=True):
        if a.text == b.text:
            assert a.score >= b.score - 1e-5
    int8 = Translator.load(trained_run, device="cpu", quantize=True)
    out = int8.translate(texts, beam=3)
    assert {r.scores_over for r in out} == {"shortlist"} and all(r.text for r in out)
    assert Translator.load(trained_run, device="cpu", shortlist=False).lexicon is None


def test_shortlist_sizes_are_the_batches_shortlists(trained_run, multi30k: Path) -> None:
    """The public sizes are those of the shortlists of the batches translate() decodes
    (length-sorted, at most batch_size sentences and batch_size * 20 source pieces)."""
    tr = Translator.load(trained_run, device="cpu")
    tr.config.inference.shortlist_k, tr.config.inference.shortlist_frequent = 3, 20
    lines = multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    texts = lines[:24]
    src_ids = tr.tokenizer.encode_src(texts)
    shortlist = _shortlist(tr, 3, 20)
    for batch_size in (64, 8):
        batches = inference_batches(source_split(src_ids), batch_size,
                                    batch_size * PIECES_PER_SENTENCE)
        sizes = tr.shortlist_sizes(texts, batch_size=batch_size)
        assert sizes == [shortlist.select([src_ids[i] for i in rows]).numel()
                         for rows in batches]
        assert 0 < max(sizes) < tr.tokenizer.tgt_vocab_size
    assert len(sizes) >= 3  # batch size 8: 24 sentences
    assert tr.shortlist_sizes(texts, shortlist=False) == []
    assert tr.shortlist_sizes(["", "  "]) == []  # nothing to decode
