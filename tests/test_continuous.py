"""Continuous batching (translate.search.continuous) against each sentence decoded alone.

The model is the shared small run (tests/conftest.py) trained on real Multi30k and Tatoeba
pairs; the sentences are Multi30k test2016 sources of mixed lengths, joining the running
batch a few at a time at random steps, as requests arrive at a service.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from conftest import needs_cpu_bf16
from translate.inference.translator import Translator
from translate.search.continuous import ContinuousSearch, Sentence

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return Translator.load(trained_run, shortlist=False)


@pytest.fixture(scope="module")
def sources(multi30k: Path, translator: Translator) -> list[str]:
    lines = (multi30k / "test_2016_flickr.de").read_text("utf-8").splitlines()
    # Mixed lengths: the shortest and the longest captions that fit the model whole (the
    # translator splits longer ones), interleaved with ordinary ones.
    fit = [s for s, ids in zip(lines[:600], translator.tokenizer.encode_src(lines[:600]),
                               strict=True) if len(ids) <= translator.max_tokens]
    by_length = sorted(fit, key=len)
    return [s for trio in zip(by_length[:30], by_length[-30:], lines[600:630], strict=True)
            for s in trio]


def continuous(translator: Translator, ids: list[list[int]], seed: int = 0, most: int = 64,
               n_best=lambda i: 1, shortlist: bool = False, **options) -> dict:
    """Each sentence's hypotheses, decoded in one running batch that they join at random
    steps (0-5 at a time, at most ``most`` at once); ``shortlist``: each over its own."""
    opts = translator.options(shortlist=shortlist, **options)
    search = ContinuousSearch(translator.model, opts, translator.special, translator.device,
                              translator.dtype, translator._shortlist(opts),
                              translator.tokenizer.tgt_vocab_size)
    rng = random.Random(seed)
    waiting, out = list(range(len(ids))), {}
    while waiting or len(search):
        take = min(rng.randint(0 if len(search) else 1, 5), most - len(search))
        search.add([Sentence(i, ids[i], n_best(i)) for i in waiting[:take]])
        waiting = waiting[take:]
        for done in search.step():
            out[done.key] = done
    return out


def alone(translator: Translator, texts: list[str], **options):
    """``Translator.translate`` of each sentence alone (one sentence a batch)."""
    return translator.translate(texts, batch_size=1, shortlist=False, **options)


def _texts(translator: Translator, finished) -> list[str]:
    return translator.tokenizer.decode_tgt([finished.hypotheses[0].tokens])


@pytest.mark.parametrize("options", [
    {"beam": 1},
    {"beam": 3},
    {"beam": 4, "no_repeat_ngram": 2, "min_len": 4},
    {"beam": 3, "alpha": -0.5},
], ids=["greedy", "beam", "ngram-minlen", "negative-alpha"])
def test_every_sentence_gets_its_alone_translation(translator, sources, options):
    ids = translator.tokenizer.encode_src(sources)
    got = continuous(translator, ids, **options)
    ref = alone(translator, sources, **options)
    assert len(got) == len(sources)
    for i, r in enumerate(ref):
        assert _texts(translator, got[i]) == [r.text], i
        assert got[i].hypotheses[0].score == pytest.approx(r.score, rel=1e-6, abs=1e-4)


@pytest.mark.parametrize("beam", [1, 3])
def test_with_the_shortlist_each_sentence_gets_its_own(trained_run, sources, beam):
    """With the shortlist on, every sentence is decoded over its own shortlist, whatever
    shares the batch: the outputs of each translated alone with the shortlist on, while the
    batch's union of shortlists grows and is cut back as sentences come and go."""
    listed = Translator.load(trained_run, shortlist=True)
    # Small shortlists (the shared model's vocabulary is 1,000 pieces, its frequent list too).
    listed.config.inference.shortlist_frequent = 100
    listed.config.inference.shortlist_k = 10
    ids = listed.tokenizer.encode_src(sources)
    got = continuous(listed, ids, seed=4, shortlist=True, beam=beam, no_repeat_ngram=beam - 1)
    ref = listed.translate(sources, batch_size=1, beam=beam, no_repeat_ngram=beam - 1)
    assert ref[0].scores_over == "shortlist"
    whole = alone(listed, sources, beam=beam, no_repeat_ngram=beam - 1)
    assert [r.score for r in ref] != pytest.approx([r.score for r in whole], abs=1e-4)
    for i, r in enumerate(ref):
        assert _texts(listed, got[i]) == [r.text], i
        assert got[i].hypotheses[0].score == pytest.approx(r.score, abs=1e-4)


def test_n_best_per_sentence(translator, sources):
    """Sentences asking for 1, 2 or 3 hypotheses share one batch; each gets what it asks
    for, as alone (n-best changes when a sentence may stop, so it is per sentence)."""
    texts = sources[:45]
    ids = translator.tokenizer.encode_src(texts)
    got = continuous(translator, ids, seed=1, n_best=lambda i: 1 + i % 3, beam=3)
    for i, text in enumerate(texts):
        ref = alone(translator, [text], beam=3, n_best=1 + i % 3)[0]
        hyps = got[i].hypotheses
        assert len(hyps) == len(ref.nbest)
        words = translator.tokenizer.decode_tgt([h.tokens for h in hyps])
        assert words == [t for t, _ in ref.nbest]
        assert [h.score for h in hyps] == pytest.approx([s for _, s in ref.nbest], abs=1e-4)


def test_tags_and_batch_changes(translator, sources):
    """Domain probabilities come with each finished sentence; sentences leave and join at
    every step, so the batch's source length and history width grow and shrink."""
    texts = sources[:30]
    ids = translator.tokenizer.encode_src(texts)
    got = continuous(translator, ids, seed=2, most=6, beam=3)
    ref = alone(translator, texts, beam=3)
    for i, r in enumerate(ref):
        probs = dict(zip(translator.labels, got[i].domain_probs.tolist(), strict=True))
        assert probs == pytest.approx(r.domain_probs, abs=1e-5)


def test_drop_removes_sentences_and_the_rest_are_unchanged(translator, sources):
    texts = sources[:24]
    ids = translator.tokenizer.encode_src(texts)
    opts = translator.options(shortlist=False, beam=3)
    search = ContinuousSearch(translator.model, opts, translator.special, translator.device,
                              translator.dtype)
    search.add([Sentence(i, x) for i, x in enumerate(ids)])
    out = {f.key: f for f in search.step() + search.step()}
    search.drop(lambda key: key % 2 == 0)
    assert len(search) == len([i for i in range(24) if i % 2 and i not in out])
    while len(search):
        out.update({f.key: f for f in search.step()})
    ref = alone(translator, texts, beam=3)
    for i, r in enumerate(ref):
        if i % 2 or i in out:
            assert _texts(translator, out[i]) == [r.text]


def _fp32_score(translator: Translator, src: list[int], tokens: list[int]) -> float:
    """The fp32 model's length-normalised log-prob of ``tokens`` for ``src``."""
    model, special = translator.model, translator.special
    with torch.inference_mode():
        enc = model.encode(torch.tensor([src]), torch.tensor([len(src)]))
        state = model.init_decoder_state(enc)
        prev, total = torch.tensor([special["bos_id"]]), 0.0
        for tok in [*tokens, special["eos_id"]]:
            logits, state, _ = model.decode_step(prev, state, enc)
            total += float(torch.log_softmax(logits.float(), -1)[0, tok])
            prev = torch.tensor([tok])
    return total / ((5 + len(tokens) + 1) / 6) ** 0.6


@pytest.mark.parametrize("precision", [
    pytest.param("bf16", marks=needs_cpu_bf16), "int8"])
def test_bf16_and_int8_as_good_as_alone(translator, trained_run, sources, precision):
    """bf16 and int8 decoding depend on the batch whatever the batching (bf16 products round
    differently per kernel, int8 quantizes each batch's activations with one scale), so
    continuous batching cannot promise their alone-outputs; what it must keep is what their
    static batches keep: every sentence answered, and outputs the fp32 model rates as highly
    as the alone-outputs (mean within 3%)."""
    low = Translator.load(trained_run, shortlist=False, precision=precision.replace(
        "int8", "fp32"), quantize=precision == "int8")
    texts = sources[:45]
    ids = low.tokenizer.encode_src(texts)
    for beam in (1, 3):
        got = continuous(low, ids, seed=3, beam=beam)
        ref = alone(low, texts, beam=beam)
        outs = [got[i].hypotheses[0].tokens for i in range(len(ids))]
        refs = low.tokenizer.encode_tgt([r.text for r in ref])
        mine = [_fp32_score(translator, x, t) for x, t in zip(ids, outs, strict=True)]
        theirs = [_fp32_score(translator, x, t) for x, t in zip(ids, refs, strict=True)]
        assert all(math.isfinite(s) for s in mine)
        assert sum(mine) / len(mine) >= 1.03 * sum(theirs) / len(theirs), beam
