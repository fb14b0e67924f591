"""prepare(): the run's label vocabulary (its one writer), pos_weight and truncation counts,
on a small real corpus (Multi30k captions and Tatoeba sentences, unequal in size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from translate import config
from translate.data import DataError, format_report, load_corpus
from translate.data.schema import columns
from translate.data.tokenizer import TokenizerError
from translate.runs.rundir import RunDir
from translate.training.prepare import prepare

MAX_TOKENS = 12  # short enough that real captions get cut


def _raw(multi30k: Path, multidomain: Path, tmp: Path) -> dict:
    raw = tiny_config(multi30k, multidomain, tmp / "run", tmp / "cache")
    for group, sizes in (("train", (400, 100)), ("valid", (20, 20)), ("test", (20,))):
        for source, n in zip(raw["data"][group], sizes, strict=True):
            source["max_pairs"] = n
    raw["tokenizer"].update(vocab_size=400, max_tokens=MAX_TOKENS)
    return raw


@pytest.fixture(scope="module")
def prepared(multi30k, multidomain, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepare")
    cfg = config.from_dict(_raw(multi30k, multidomain, tmp))
    lines: list[str] = []
    run = RunDir(cfg.training.run_dir).create()
    return cfg, run, prepare(cfg, run, log=lines.append), lines


def test_a_run_keeps_its_tokenizer_and_refuses_other_settings(prepared, multi30k, multidomain):
    cfg, run, data, _ = prepared
    raw = _raw(multi30k, multidomain, run.root.parent)
    raw["tokenizer"]["input_sentence_size"] = 50  # how it was sampled: not its meaning
    again = prepare(config.from_dict(raw), run, log=lambda _: None)
    assert again.tokenizer.src_vocab_size == data.tokenizer.src_vocab_size
    raw["tokenizer"].update(vocab_size=500, model_type="bpe")
    with pytest.raises(TokenizerError) as err:
        prepare(config.from_dict(raw), run, log=lambda _: None)
    assert str(err.value) == (
        f"{run.tokenizer_dir / 'tokenizer.json'}: the run's tokenizer was trained with other "
        "settings than the config's (tokenizer.model_type: trained 'unigram', asked 'bpe'; "
        "tokenizer.vocab_size: trained 400, asked 500); set them back, or start a new run "
        "(another training.run_dir, or translate.train --overwrite)")
    assert json.loads((run.tokenizer_dir / "tokenizer.json").read_text())[
        "requested_vocab_size"] == 400  # untouched


def test_pos_weight_is_negatives_over_positives_of_the_training_labels(prepared):
    cfg, _, data, _ = prepared
    train = load_corpus(cfg.data, log=lambda _: None).splits["train"]
    (domains,) = columns(train, "domains")
    labelled = [set(d) for d in domains if d]
    positives = torch.tensor([sum(label in d for d in labelled) for label in data.labels],
                             dtype=torch.float32)
    expected = (len(labelled) - positives) / positives
    assert data.labels == ["captions", "general"]
    # 400 captions against 100 sentences: one weight below 1, one above
    assert expected[0] < 1 < expected[1]
    torch.testing.assert_close(data.pos_weight, expected)


def test_truncations_are_counted_logged_and_reported(prepared):
    _, _, data, lines = prepared
    for name, split in data.splits.items():
        lengths = [len(x) for x in data.tokenizer.encode_src(data.sources[name])]
        target = [len(x) for x in data.tokenizer.encode_tgt(data.references[name])]
        cut = {"src": sum(n > MAX_TOKENS for n in lengths),
               "tgt": sum(n > MAX_TOKENS for n in target)}
        assert data.report["truncated"][name] == cut
        assert max(map(len, split.src_ids)) <= MAX_TOKENS
    train = data.report["truncated"]["train"]
    assert train["src"] > 0 and train["tgt"] > 0
    assert (f"data: train: {train['src']} sources and {train['tgt']} targets of "
            f"{len(data.splits['train'])} pairs cut to tokenizer.max_tokens={MAX_TOKENS} "
            "pieces") in lines
    assert f"cut to tokenizer.max_tokens: train src {train['src']} tgt {train['tgt']}" in \
        format_report(data.report)


def test_labels_are_written_once_and_their_order_kept(prepared, multi30k, multidomain):
    cfg, run, data, _ = prepared
    assert json.loads(run.labels_path.read_text(encoding="utf-8")) == {
        "labels": ["captions", "general"]}
    # a resumed run keeps the saved order (its output layer's meaning), without rewriting it
    run.labels_path.write_text('{"labels": ["general", "captions"]}', encoding="utf-8")
    again = prepare(cfg, run, log=lambda _: None)
    assert again.labels == ["general", "captions"]
    assert run.labels_path.read_text(encoding="utf-8") == '{"labels": ["general", "captions"]}'
    assert again.splits["train"].label_ids[:3] == [[1], [1], [1]]  # captions: now output 1
    # a corpus with a label the run never had cannot continue that run
    raw = _raw(multi30k, multidomain, run.root.parent)
    raw["data"]["train"][1]["domains"] = ["general", "news"]
    with pytest.raises(DataError, match=r"labels.json: the corpus has labels the run was "
                                        r"not trained with: news"):
        prepare(config.from_dict(raw), run, log=lambda _: None)
