"""Attention from continuous batching (translate.search.continuous with
translate.search.kept_attention) against the static search's for each sentence alone.

The model is the shared small run (tests/conftest.py); the sentences are Multi30k test2016
sources of mixed lengths joining the running batch a few at a time at random steps, some
asking for their attention and some not, as HTML and plain requests share a service's batch.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from translate.inference.translator import Translator
from translate.search.continuous import ContinuousSearch, Sentence
from translate.search.decoding import decode_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return Translator.load(trained_run, shortlist=False)


@pytest.fixture(scope="module")
def source_ids(multi30k: Path, translator: Translator) -> list[list[int]]:
    lines = (multi30k / "test_2016_flickr.de").read_text("utf-8").splitlines()
    ids = [x for x in translator.tokenizer.encode_src(lines[:300])
           if len(x) <= translator.max_tokens]
    by_length = sorted(ids, key=len)  # the shortest and longest beside ordinary ones
    return [x for trio in zip(by_length[:10], by_length[-10:], ids[200:210], strict=True)
            for x in trio]


def asks(i: int) -> bool:
    return i % 3 != 1  # two sentences in three ask for their attention


def continuous(translator: Translator, ids: list[list[int]], opts, seed: int,
               n_best=lambda i: 1) -> dict:
    """Each sentence's hypotheses from one running batch that they join at random steps."""
    search = ContinuousSearch(translator.model, opts, translator.special, translator.device,
                              translator.dtype, translator._shortlist(opts),
                              translator.tokenizer.tgt_vocab_size)
    rng = random.Random(seed)
    waiting, out = list(range(len(ids))), {}
    while waiting or len(search):
        take = rng.randint(0 if len(search) else 1, 4)
        search.add([Sentence(i, ids[i], n_best(i), attention=asks(i)) for i in waiting[:take]])
        waiting = waiting[take:]
        for done in search.step():
            out[done.key] = done.hypotheses
    return out


def check_against_alone(translator: Translator, ids: list[list[int]], seed: int,
                        n_best=lambda i: 1, **options) -> None:
    opts = translator.options(batch_size=1, **options)
    got = continuous(translator, ids, opts, seed, n_best)
    for i, x in enumerate(ids):
        alone = dataclasses.replace(opts, n_best=n_best(i))
        (ref,) = decode_ids(translator.model, [x], alone, special=translator.special,
                            device=translator.device, shortlist=translator._shortlist(opts),
                            attention=True).hypotheses
        hyps = got[i]
        assert [h.tokens for h in hyps] == [h.tokens for h in ref], i
        assert [h.score for h in hyps] == pytest.approx([h.score for h in ref], abs=1e-4)
        for h, r in zip(hyps, ref, strict=True):
            if not asks(i):
                assert h.attention is None
                continue
            assert h.attention.dtype == torch.float32 and h.attention.device.type == "cpu"
            assert h.attention.shape == r.attention.shape == (len(r.tokens) + 1, len(x))
            assert torch.allclose(h.attention, r.attention, atol=1e-5), i


@pytest.mark.parametrize("options", [
    {"beam": 1},
    {"beam": 4, "no_repeat_ngram": 2, "min_len": 4},
], ids=["greedy", "beam-ngram-minlen"])
def test_attention_is_each_sentences_alone(translator, source_ids, options):
    check_against_alone(translator, source_ids, seed=5, **options)


def test_every_hypothesis_of_the_n_best_gets_its_own_history(translator, source_ids):
    """Beam hypotheses other than the best are walked back from their own eos."""
    check_against_alone(translator, source_ids, seed=6, n_best=lambda i: 1 + i % 3, beam=3)


def test_attention_with_each_sentences_own_shortlist(trained_run, source_ids):
    listed = Translator.load(trained_run, shortlist=True)
    listed.config.inference.shortlist_frequent = 100
    listed.config.inference.shortlist_k = 10
    check_against_alone(listed, source_ids, seed=7, beam=3, shortlist=True)


def test_an_ensemble_keeps_its_members_mean_attention(trained_run, source_ids):
    """An ensemble (the run's last and best checkpoints, weighted) is decoded through the
    running batch as one model; its attention, the members' weighted mean, is the static
    search's."""
    snapshots = Translator.load(trained_run, shortlist=False, checkpoint="last,best",
                                weights=[0.7, 0.3])
    check_against_alone(snapshots, source_ids[:15], seed=8, beam=2)
