"""Domains on real data: temperature sampling, per-domain validation, translate.evaluate."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch

from conftest import ROOT, tiny_config
from translate import config
from translate.config import ConfigError, DataConfig, SamplingConfig, SourceConfig
from translate.data import load_corpus
from translate.data.sampling import DomainSampler
from translate.data.schema import columns
from translate.runs.checkpoint import load_checkpoint
from translate.training.trainer import Trainer


def test_multidomain_config_names_every_domain_with_its_dev_set(shared_data: Path) -> None:
    cfg = config.load(ROOT / "configs" / "multidomain.yaml")
    labels = ["captions", "religion", "it", "legal", "medical", "subtitles", "chat", "general",
              "news"]
    for split in ("train", "valid"):
        sources = getattr(cfg.data, split)
        assert [s.domains for s in sources] == [[lab] for lab in labels]
        for s in sources:  # the paths are the repo root's; the corpora are in shared_data
            rel = Path(s.prefix).relative_to("../shared/data")
            assert (shared_data / rel).with_suffix(".de").is_file(), s.prefix
    assert cfg.model.tagger.enabled and cfg.data.sampling.temperature > 1
    assert cfg.model.domain_conditioning.enabled


def _quiet(_msg: str) -> None:
    pass


def _text(prefix: Path, label: str, n: int = 0) -> SourceConfig:
    return SourceConfig(kind="text", prefix=str(prefix), domains=[label], max_pairs=n)


@pytest.fixture(scope="module")
def three_domains(multi30k: Path, multidomain: Path, tmp_path_factory) -> list[list[str]]:
    """Training labels of 6000 captions, 1500 IT and 1500 legal pairs (two small domains)."""
    cfg = DataConfig(src_lang="de", tgt_lang="en",
                     cache_dir=str(tmp_path_factory.mktemp("cache")),
                     train=[_text(multi30k / "train", "captions", 6000),
                            _text(multidomain / "it" / "train", "it"),
                            _text(multidomain / "legal" / "train", "legal")])
    return columns(load_corpus(cfg, log=_quiet).splits["train"], "domains")[0]


def test_temperature_sampling_draws_the_expected_shares(three_domains) -> None:
    sizes = Counter(d[0] for d in three_domains)
    total = len(three_domains)
    sampler = DomainSampler(three_domains, SamplingConfig(temperature=2.0), seed=3)
    rows = sampler.rows(0)
    assert len(rows) == total  # an epoch keeps the corpus's size
    drawn = Counter(three_domains[i][0] for i in rows)
    share = {d: n ** 0.5 for d, n in sizes.items()}
    for d, n in sizes.items():
        assert abs(drawn[d] - total * share[d] / sum(share.values())) < 1, d
        times = Counter(int(i) for i in rows if three_domains[i][0] == d)
        if drawn[d] < n:  # downsampled: distinct pairs
            assert max(times.values()) == 1
        else:  # upsampled: every pair k or k + 1 times
            assert len(times) == n and max(times.values()) - min(times.values()) <= 1
    assert drawn["it"] > 1.4 * sizes["it"] and drawn["captions"] < sizes["captions"]
    # seeded by (seed, epoch): the same epoch again is identical, the next one is not
    again = DomainSampler(three_domains, SamplingConfig(temperature=2.0), seed=3)
    assert np.array_equal(again.rows(0), rows)
    assert not np.array_equal(sampler.rows(1), rows)
    # per-domain weights at temperature 1: shares proportional to weight * size
    weighted = DomainSampler(three_domains, SamplingConfig(weights={"legal": 3.0}), seed=3)
    legal = Counter(three_domains[i][0] for i in weighted.rows(0))["legal"]
    expected = total * 3 * sizes["legal"] / (total + 2 * sizes["legal"])
    assert abs(legal - expected) < 1


def test_sampling_config_errors_name_the_field(three_domains) -> None:
    with pytest.raises(ConfigError, match=r"^data\.sampling\.temperature: expected a positive"):
        config.from_dict({"data": {"train": [{"prefix": "x"}], "sampling": {"temperature": 0}}})
    with pytest.raises(ConfigError, match=r"^data\.sampling\.weights\.it: expected a positive"):
        config.from_dict({"data": {"train": [{"prefix": "x"}],
                                   "sampling": {"weights": {"it": -1}}}})
    with pytest.raises(ConfigError, match=r"data\.sampling\.weights: expected a mapping"):
        config.from_dict({"data": {"train": [{"prefix": "x"}], "sampling": {"weights": [1]}}})
    with pytest.raises(ConfigError, match=r"^data\.sampling\.weights\.medical: no training "
                                          r"pair has this domain \(.*captions, it, legal\)"):
        DomainSampler(three_domains, SamplingConfig(weights={"medical": 2.0}))


def _small(multi30k: Path, multidomain: Path, tmp: Path, name: str, **training) -> dict:
    raw = tiny_config(multi30k, multidomain, tmp / name, tmp / "cache", **training)
    for group, n in (("train", 400), ("valid", 20), ("test", 20)):
        for source in raw["data"][group]:
            source["max_pairs"] = n
    raw["data"]["train"][1]["max_pairs"] = 60  # a small domain for the sampler to lift
    raw["tokenizer"]["vocab_size"] = 400
    raw["training"].update({"max_tokens": 400, "warmup_steps": 5})
    return raw


def test_sampled_training_resumes_exactly(multi30k, multidomain, tmp_path) -> None:
    """An epoch's sampled rows and their order are rebuilt on resume: same final weights."""
    def raw(name: str, steps: int) -> dict:
        r = _small(multi30k, multidomain, tmp_path, name, max_steps=steps, valid_every=100,
                   max_epochs=0)
        r["data"]["sampling"] = {"temperature": 4.0}
        r["data"]["train"][0]["max_pairs"] = 80  # short epochs: the run crosses one
        r["data"]["train"][1]["max_pairs"] = 20
        r["data"]["valid"] = r["data"]["test"] = []  # only the weights matter here
        return r

    straight = Trainer(config.from_dict(raw("straight", 10)))
    domains = straight.data.domains["train"]
    sizes = Counter(d[0] for d in domains)
    rows = [i for b in straight.sampler.batches(0) for i in b]
    general = sum(1 for i in rows if domains[i] == ["general"])
    share = sizes["general"] ** 0.25 / (sizes["general"] ** 0.25 + sizes["captions"] ** 0.25)
    assert len(rows) == len(domains) and abs(general - len(rows) * share) < 1
    straight.fit()
    first = raw("resumed", 4)
    Trainer(config.from_dict(first)).fit()
    first["training"]["max_steps"] = 10
    Trainer(config.from_dict(first), resume=True).fit()
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["progress"]["epoch"] >= 1 and a["progress"]["step"] == b["progress"]["step"] == 10
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_run_without_labels_validates_as_before(multi30k, multidomain, tmp_path,
                                                capsys) -> None:
    raw = _small(multi30k, multidomain, tmp_path, "plain", max_steps=4, valid_every=4,
                 max_epochs=0)
    raw["model"]["tagger"] = {"enabled": False}
    for group in ("train", "valid", "test"):
        for source in raw["data"][group]:
            source["domains"] = []
    trainer = Trainer(config.from_dict(raw))
    assert trainer.sampler.rows is None and trainer.data.labels == []
    trainer.fit()
    records = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text()
               .splitlines()]
    valid = [r for r in records if "valid/loss" in r]
    assert len(valid) == 1
    assert set(valid[0]) == {"step", "time", "valid/loss", "valid/ppl", "valid/bleu",
                             "valid/chrf", "valid/best", "valid/elapsed_min"}
    assert not any(line.startswith("  domain ") for line in capsys.readouterr().err.splitlines())


def test_per_domain_validation_is_sacrebleu_on_each_domains_rows(trained_run: Path,
                                                                multi30k: Path,
                                                                multidomain: Path) -> None:
    """The shared run validates on 150 captions then 150 Tatoeba pairs."""
    records = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "valid/loss" in r][-1]
    hyps = (trained_run / "valid_hyps.txt").read_text(encoding="utf-8").split("\n")[:-1]
    refs = {"captions": (multi30k / "val.en").read_text(encoding="utf-8").splitlines()[:150],
            "general": (multidomain / "general" / "dev.en").read_text(encoding="utf-8")
            .splitlines()[:150]}
    assert len(hyps) == 300
    for i, (label, ref) in enumerate(refs.items()):
        mine = hyps[150 * i:150 * (i + 1)]
        assert last[f"valid/bleu/{label}"] == round(sacrebleu.corpus_bleu(mine, [ref]).score, 2)
        assert last[f"valid/chrf/{label}"] == round(sacrebleu.corpus_chrf(mine, [ref]).score, 2)
        for key in ("precision", "recall", "f1", "ap"):
            assert 0 <= last[f"valid/{key}/{label}"] <= 1
    assert last["valid/tag_macro_f1"] == pytest.approx(
        (last["valid/f1/captions"] + last["valid/f1/general"]) / 2)
    log = (trained_run / "train.log").read_text(encoding="utf-8")
    assert re.search(r"^\S+ \S+ INFO   domain +n +BLEU +chrF +P +R +F1 +AP +th$", log, re.M)
    assert f"  general    150  {last['valid/bleu/general']:5.2f}" in log


def test_a_pair_in_two_sources_trains_both_labels(multidomain, tmp_path) -> None:
    """'Das ist großartig.' is in the chat and the Tatoeba folders: one step on it raises
    the tagger's probability of both labels."""
    from translate.data.batching import collate
    from translate.model import build_model
    from translate.runs.rundir import RunDir
    from translate.training.loss import batch_losses
    from translate.training.prepare import prepare

    raw = {"data": {"cache_dir": str(tmp_path / "cache"), "train": [
        {"prefix": str(multidomain / "chat" / "train"), "domains": ["chat"], "max_pairs": 1831},
        {"prefix": str(multidomain / "general" / "train"), "domains": ["general"],
         "max_pairs": 5250}]},
        "tokenizer": {"vocab_size": 500, "input_sentence_size": 1000},
        "training": {"run_dir": str(tmp_path / "run")},
        "model": {"emb_dim": 32, "enc_hidden": 32, "enc_layers": 1, "dec_hidden": 64,
                  "dec_layers": 1, "dropout": 0.0, "tagger": {"hidden": 16}}}
    cfg = config.from_dict(raw)
    data = prepare(cfg, RunDir(cfg.training.run_dir).create(), log=_quiet)
    row = data.sources["train"].index("Das ist großartig.")
    assert data.domains["train"][row] == ["chat", "general"]
    torch.manual_seed(0)
    tok = data.tokenizer
    model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size, tok.pad_id, 2)
    batch = collate(data.splits["train"], [row], tok.pad_id, tok.bos_id, tok.eos_id)
    assert batch.domains.tolist() == [[1.0, 1.0]]

    def probs() -> list[float]:
        out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.src_mask,
                    tgt_mask=batch.tgt_mask)
        return torch.sigmoid(out.domain_logits)[0].tolist()

    before = probs()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    _, tag = batch_losses(model, batch, torch.nn.CrossEntropyLoss(reduction="sum"), None)
    tag.backward()
    opt.step()
    after = probs()
    assert after[0] > before[0] and after[1] > before[1]


def test_evaluate_prints_a_row_per_domain(trained_run: Path, capsys, tmp_path) -> None:
    from translate.evaluate import main

    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_:
            main(["--model", str(trained_run), "--device", "cpu", "--beam", "1", *argv])
        out = capsys.readouterr()
        return exit_.value.code, out.out, out.err

    code, out, _ = run("--split", "valid", "--max-pairs", "40")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["domain", "n", "BLEU", "chrF"]
    assert [ln.split()[:2] for ln in lines[1:4]] == [["captions", "40"], ["general", "40"],
                                                     ["pooled", "80"]]
    assert lines[4].startswith("BLEU signature: nrefs:1|") and "chrF signature" in lines[5]
    code, out, _ = run("--split", "valid", "--max-pairs", "40", "--format", "json")
    result = json.loads(out)
    assert code == 0 and set(result["domains"]) == {"captions", "general"}
    assert result["domains"]["general"]["n"] == 40 and result["pooled"]["n"] == 80
    # errors: one line each, exit status 2
    code, out, err = run("--split", "train")
    assert code == 2 and err.count("\n") == 1 and "--split 'train'" in err
    code, out, err = run("--set", "data.valid[0].prefix=/nonexistent/val", "--split", "valid")
    assert code == 2 and err.count("\n") == 1 and "/nonexistent/val.de: file not found" in err
    code, out, err = run("--set", "data.test[0].domains=[]")
    assert code == 2 and err.count("\n") == 1 and "no row of data.test carries a domain" in err


def test_evaluate_scores_the_split_held_out_of_unsplit_sources(trained_run: Path, capsys,
                                                               tmp_path, multi30k) -> None:
    """A corpus with no listed test sources (the default corpus is one) is scored on the rows
    training held out of ``data.unsplit``, by their labels."""
    import yaml

    from translate.evaluate import load_split, main

    raw = yaml.safe_load((trained_run / "config.yaml").read_text())
    raw["data"].update(train=[], valid=[], test=[], unsplit=[
        {"kind": "text", "prefix": str(multi30k / "val"), "domains": ["captions"]}],
        split={"valid_fraction": 0.1, "test_fraction": 0.1})
    cfg = tmp_path / "unsplit.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    src, ref, doms = load_split(cfg, [], "test", None)
    val_src = (multi30k / "val.de").read_text(encoding="utf-8").splitlines()
    assert 50 < len(src) < 200 and set(src) <= set(val_src)  # ~10% of the 1,014 rows
    assert len(ref) == len(src) and doms == [["captions"]] * len(src)
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(trained_run), "--config", str(cfg), "--device", "cpu",
              "--beam", "1", "--format", "json"])
    result = json.loads(capsys.readouterr().out)
    assert exit_.value.code == 0 and result["pooled"]["n"] == len(src)
    assert result["domains"]["captions"]["n"] == len(src) and result["pooled"]["bleu"] > 0
    # a cap on hash-split rows would score another sample, not fewer rows: refused
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(trained_run), "--config", str(cfg), "--max-pairs", "10"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "data.unsplit" in err
    raw["data"].update(unsplit=[], train=[{"kind": "text", "prefix": str(multi30k / "val")}])
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(trained_run), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "nothing to score" in err and err.count("\n") == 1
