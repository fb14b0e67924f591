"""Greedy and beam search on the real Seq2Seq, briefly trained on real Multi30k pairs.

A randomly initialised model almost never emits eos, so the eos / n-best / min-length
behaviour is checked on a small model trained for a few seconds on short Multi30k captions
with a whitespace vocabulary built here (the project tokenizer is not needed for search).
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

from translate.config import InferenceConfig, ModelConfig
from translate.model import build_model
from translate.search.beam import Hypothesis, beam_search, greedy_search, length_penalty
from translate.search.decoding import decode_ids

UNK, BOS, EOS, PAD = 0, 1, 2, 3
SPECIALS = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD}
N_TRAIN, N_EVAL = 400, 24


def _vocab(lines: list[str]) -> dict[str, int]:
    words = sorted({w for line in lines for w in line.split()})
    return {w: i + 4 for i, w in enumerate(words)}


def _ids(line: str, vocab: dict[str, int]) -> list[int]:
    return [vocab.get(w, UNK) for w in line.split()]


def _pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    out = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out, lengths


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(multi30k):
    de = (multi30k / "train.de").read_text(encoding="utf-8").splitlines()
    en = (multi30k / "train.en").read_text(encoding="utf-8").splitlines()
    pairs = [(d.lower(), e.lower()) for d, e in zip(de, en, strict=True)]
    pairs = [p for p in pairs if len(p[0].split()) <= 9 and len(p[1].split()) <= 9]
    train = pairs[:N_TRAIN]
    src_vocab, tgt_vocab = _vocab([d for d, _ in train]), _vocab([e for _, e in train])
    val_de = (multi30k / "val.de").read_text(encoding="utf-8").splitlines()[:N_EVAL]
    return {
        "train": [(_ids(d, src_vocab), _ids(e, tgt_vocab)) for d, e in train],
        "eval": [_ids(d.lower(), src_vocab) for d in val_de],
        "src_vocab": len(src_vocab) + 4,
        "tgt_vocab": len(tgt_vocab) + 4,
    }


def _model(corpus, input_feeding: bool, train_steps: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        emb_dim=32, enc_hidden=32, enc_layers=1, dec_hidden=64, dec_layers=1, dropout=0.0,
        input_feeding=input_feeding,
    )
    model = build_model(cfg, corpus["src_vocab"], corpus["tgt_vocab"], PAD, 0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = random.Random(0)
    data = corpus["train"]
    for _ in range(train_steps):
        batch = rng.sample(data, 32)
        src, src_len = _pad([s for s, _ in batch])
        tgt_in, _ = _pad([[BOS, *t] for _, t in batch])
        tgt_out, _ = _pad([[*t, EOS] for _, t in batch])
        logits = model(src, src_len, tgt_in).logits
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module", params=[True, False], ids=["input_feeding", "parallel"])
def trained(request, corpus):
    return _model(corpus, request.param, train_steps=150)


@pytest.fixture(scope="module")
def untrained(corpus):
    return _model(corpus, True, train_steps=0)


@pytest.fixture(scope="module")
def src(corpus):
    return _pad(corpus["eval"])


def _beam(model, src, lengths, **kw) -> list[list[Hypothesis]]:
    args = dict(
        beam_size=5, n_best=1, alpha=0.6, max_len_a=1.5, max_len_b=5, min_len=1,
        no_repeat_ngram=0, **SPECIALS,
    )
    args.update(kw)
    return beam_search(model, src, lengths, **args)


def _greedy(model, src, lengths, **kw) -> list[list[Hypothesis]]:
    args = dict(max_len_a=1.5, max_len_b=5, **SPECIALS)
    args.update(kw)
    return greedy_search(model, src, lengths, **args)


def _tokens(results: list[list[Hypothesis]]) -> list[list[int]]:
    return [hyps[0].tokens for hyps in results]


def _teacher_forced_log_prob(model, src_row, length, tokens: list[int]) -> float:
    """Sum of log p(token) over ``tokens + [eos]`` from the training-time forward pass."""
    tgt_in = torch.tensor([[BOS, *tokens]])
    with torch.no_grad():
        logits = model(src_row[None, :length], torch.tensor([length]), tgt_in).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    return float(lp[torch.arange(len(tokens) + 1), torch.tensor([*tokens, EOS])].sum())


def _max_len(length: int, a: float, b: float) -> int:
    return int(a * length + b)


# --------------------------------------------------------------------------- tests


def test_beam_one_equals_greedy(trained, untrained, src):
    s, n = src
    for model in (trained, untrained):
        greedy = _greedy(model, s, n)
        beam = _beam(model, s, n, beam_size=1)
        assert _tokens(beam) == _tokens(greedy)
        for g, b in zip(greedy, beam, strict=True):
            assert b[0].log_prob == pytest.approx(g[0].log_prob, abs=1e-4)
            assert b[0].score == pytest.approx(g[0].score, abs=1e-4)


def test_trained_model_stops_at_eos_and_scores_match_forward(trained, src):
    s, n = src
    for results in (_greedy(trained, s, n), _beam(trained, s, n, n_best=3)):
        ended_early = 0
        for i, hyps in enumerate(results):
            for h in hyps:
                assert EOS not in h.tokens and BOS not in h.tokens and PAD not in h.tokens
                # The raw score is exactly the model's probability of tokens + eos, so the
                # hypothesis really ended with eos (and eos' log-prob is counted once).
                ref = _teacher_forced_log_prob(trained, s[i], int(n[i]), h.tokens)
                assert h.log_prob == pytest.approx(ref, abs=1e-3)
                assert h.score == pytest.approx(
                    h.log_prob / length_penalty(len(h.tokens) + 1, 0.6), abs=1e-4
                )
            ended_early += len(hyps[0].tokens) < _max_len(int(n[i]), 1.5, 5)
        assert ended_early >= len(results) // 2  # eos, not the length limit, ended most


def test_n_best_sorted_and_distinct(trained, src):
    s, n = src
    results = _beam(trained, s, n, beam_size=5, n_best=5)
    for hyps in results:
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5
    # n-best's first entry is the 1-best answer.
    assert _tokens(results) == _tokens(_beam(trained, s, n, beam_size=5, n_best=1))


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_independent_of_batch_size_and_order(trained, src, search):
    s, n = src
    run = _greedy if search == "greedy" else _beam
    together = _tokens(run(trained, s, n))
    alone = [
        _tokens(run(trained, s[i : i + 1, : int(n[i])], n[i : i + 1]))[0] for i in range(len(n))
    ]
    perm = torch.randperm(len(n), generator=torch.Generator().manual_seed(1))
    shuffled = _tokens(run(trained, s[perm], n[perm]))
    assert together == alone
    assert [shuffled[j] for j in perm.argsort().tolist()] == together


def test_max_length_per_sentence(trained, untrained, src):
    s, n = src
    a, b = 0.5, 2
    for model in (trained, untrained):
        for results in (_greedy(model, s, n, max_len_a=a, max_len_b=b),
                        _beam(model, s, n, max_len_a=a, max_len_b=b, n_best=3)):
            limits = [_max_len(int(x), a, b) for x in n]
            for hyps, limit in zip(results, limits, strict=True):
                assert all(len(h.tokens) <= limit for h in hyps)
    # An untrained model hardly ever says eos, so it runs to each sentence's own limit: the
    # limit is per sentence, not the batch maximum.
    for results in (_greedy(untrained, s, n, max_len_a=a, max_len_b=b),
                    _beam(untrained, s, n, max_len_a=a, max_len_b=b)):
        hits = [len(h[0].tokens) == _max_len(int(x), a, b) for h, x in zip(results, n, strict=True)]
        assert sum(hits) >= len(n) - 2
    assert len(set(limits)) > 2


def test_min_length(trained, src):
    s, n = src
    free = _tokens(_beam(trained, s, n))
    assert min(map(len, free)) < 8  # the constraint below really binds
    for results in (_greedy(trained, s, n, min_len=8, max_len_b=12),
                    _beam(trained, s, n, min_len=8, max_len_b=12, n_best=3)):
        assert all(len(h.tokens) >= 8 for hyps in results for h in hyps)


@pytest.mark.parametrize("ngram", [1, 2, 3])
def test_no_repeat_ngram(untrained, src, ngram):
    s, n = src

    def repeats(tokens: list[int]) -> bool:
        grams = [tuple(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1)]
        return len(grams) != len(set(grams))

    plain = _beam(untrained, s, n, n_best=2)
    assert any(repeats(h.tokens) for hyps in plain for h in hyps)  # the model does repeat
    blocked = _beam(untrained, s, n, n_best=2, no_repeat_ngram=ngram)
    assert not any(repeats(h.tokens) for hyps in blocked for h in hyps)


def test_pad_and_bos_never_generated(corpus, src):
    s, n = src
    model = _model(corpus, False, train_steps=0)
    with torch.no_grad():  # make pad and bos the model's favourite outputs by far
        model.generator.proj.bias[PAD] = 50.0
        model.generator.proj.bias[BOS] = 40.0
    for results in (_greedy(model, s, n), _beam(model, s, n, n_best=5)):
        for hyps in results:
            for h in hyps:
                assert PAD not in h.tokens and BOS not in h.tokens
                assert math.isfinite(h.score)


def test_restores_training_mode_and_checks_arguments(untrained, src):
    s, n = src
    untrained.train()
    try:
        _greedy(untrained, s[:2], n[:2])
        assert untrained.training
    finally:
        untrained.eval()
    with pytest.raises(ValueError, match="n_best"):
        _beam(untrained, s, n, beam_size=2, n_best=3)
    assert _greedy(untrained, s[:0], n[:0]) == []


def test_plain_decoder_rnn_searches_the_same(trained, corpus, src):
    """``model.fused_decoder_rnn: false`` (nn.LSTM per step) loads the same weights and finds
    the same outputs; scores agree to float32 rounding of differently grouped products."""
    cfg = dataclasses.replace(trained.cfg, fused_decoder_rnn=False)
    plain = build_model(cfg, corpus["src_vocab"], corpus["tgt_vocab"], PAD, 0)
    plain.load_state_dict(trained.state_dict())
    plain.eval()
    s, n = src
    for run in (_greedy, _beam):
        fast, ref = run(trained, s, n), run(plain, s, n)
        assert _tokens(fast) == _tokens(ref)
        assert [h[0].score for h in fast] == pytest.approx([h[0].score for h in ref], abs=1e-4)


def test_decode_ids_batches_like_training_and_keeps_input_order(trained, corpus):
    """decode_ids batches through collate: an empty source is searched as a lone eos, and
    every sentence gets what it gets alone, whatever the sentence and token caps."""
    ids = corpus["eval"][:9]
    cpu = torch.device("cpu")
    opts = InferenceConfig(beam_size=3, n_best=2)
    alone = [decode_ids(trained, [x], opts, special=SPECIALS, device=cpu).hypotheses[0]
             for x in [*ids, [EOS]]]
    for batch_size, max_tokens in ((4, 0), (128, 0), (3, 20)):
        opts = dataclasses.replace(opts, batch_size=batch_size)
        got = decode_ids(trained, [*ids, []], opts, special=SPECIALS, device=cpu,
                         max_tokens=max_tokens).hypotheses
        assert [[h.tokens for h in hyps] for hyps in got] == [
            [h.tokens for h in hyps] for hyps in alone]
        assert [h.score for hyps in got for h in hyps] == pytest.approx(
            [h.score for hyps in alone for h in hyps], abs=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(trained, src):
    s, n = src
    cpu_greedy, cpu_beam = _tokens(_greedy(trained, s, n)), _tokens(_beam(trained, s, n))
    model = trained.to("cuda")
    try:
        greedy = _tokens(_greedy(model, s.cuda(), n))
        beam = _tokens(_beam(model, s.cuda(), n))
        assert _tokens(_beam(model, s.cuda(), n, beam_size=1)) == greedy
    finally:
        trained.to("cpu")
    # Different kernels may break a near-tie differently; nearly all must agree.
    assert sum(a == b for a, b in zip(greedy, cpu_greedy, strict=True)) >= len(n) - 2
    assert sum(a == b for a, b in zip(beam, cpu_beam, strict=True)) >= len(n) - 2


@pytest.mark.parametrize("vocab", [8000, 8037, 150, 7])
@pytest.mark.parametrize("n", [1, 2, 10])
def test_row_topk_matches_torch_topk(vocab, n):
    from translate.search.ops import row_topk as _row_topk

    gen = torch.Generator().manual_seed(vocab * 31 + n)
    x = torch.log_softmax(torch.randn(57, vocab, generator=gen) * 4, dim=1)
    x[:, :2] = -math.inf  # banned specials, as search masks them
    x[3, :] = -math.inf
    x[3, vocab - 1] = -0.5  # a forced row: only one finite entry, in the tail
    n = min(n, vocab)
    values, idx = _row_topk(x, n)
    ref_values, _ = x.topk(n, dim=1)
    assert torch.equal(values, ref_values)
    assert torch.equal(x.gather(1, idx), values)  # the indices point at those values
    finite = torch.isfinite(values)
    for row in range(x.size(0)):  # finite picks are distinct columns
        cols = idx[row][finite[row]].tolist()
        assert len(cols) == len(set(cols))
    assert idx[3, 0].item() == vocab - 1
    strided = x.t().contiguous().t()  # same values, column-major: not viewable as one row
    assert all(torch.equal(a, b) for a, b in zip(_row_topk(strided, n), (values, idx),
                                                  strict=True))


def test_exhaustive_beam_on_a_tiny_vocabulary(src):
    """With a beam wider than every live prefix, beam search is exhaustive: its n-best list
    is every hypothesis up to the length limit, ranked as brute force ranks them. The
    vocabulary (unk and one word) is smaller than 2k, which the first step pads for."""
    import itertools

    torch.manual_seed(3)
    cfg = ModelConfig(emb_dim=16, enc_hidden=16, enc_layers=1, dec_hidden=32, dec_layers=1,
                      dropout=0.0, input_feeding=False)
    model = build_model(cfg, 400, 5, PAD, 0)
    with torch.no_grad():
        model.generator.proj.bias.copy_(torch.tensor([0.3, 0.0, -1.0, 0.0, 0.5]))
    s, n = src
    s, n = s[:3].clamp(max=399), n[:3]
    results = _beam(model, s, n, beam_size=16, n_best=14, max_len_a=0.0, max_len_b=3)
    for i, hyps in enumerate(results):
        brute = []
        for length in (1, 2, 3):
            for tokens in itertools.product((UNK, 4), repeat=length):
                lp = _teacher_forced_log_prob(model, s[i], int(n[i]), list(tokens))
                brute.append((lp / length_penalty(length + 1, 0.6), list(tokens)))
        brute.sort(key=lambda x: -x[0])
        assert [h.tokens for h in hyps] == [t for _, t in brute]
        assert [h.score for h in hyps] == pytest.approx([sc for sc, _ in brute], abs=1e-4)


def test_search_log_probs_are_bit_identical_to_an_out_of_place_log_softmax(trained, corpus,
                                                                           src):
    """On CPU, search normalises the generator's logits in place (no second [N, V] buffer);
    over real decoder steps that gives exactly what the out-of-place call would."""
    from translate.search.beam import _log_probs

    s, n = src
    with torch.no_grad():
        enc = trained.encode(s, n)
        state = trained.init_decoder_state(enc)
        prev = torch.full((s.size(0),), BOS, dtype=torch.long)
        for _ in range(4):
            logits, _, _ = trained.decode_step(prev, state, enc)
            expected = torch.log_softmax(logits.float(), dim=-1)
            got, state = _log_probs(trained, prev, state, enc)
            assert got.shape == (s.size(0), corpus["tgt_vocab"])
            assert torch.equal(got, expected)
            prev = got.argmax(-1)
