"""training.valid_max_sentences: a capped validation keeps every domain.

Dev sets listed one after another used to be cut to their first rows, which dropped whole
domains from validation; the cap now takes a seeded sample stratified by domain.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from test_train import _small

from translate import config
from translate.data.schema import make_dataset
from translate.training.trainer import Trainer
from translate.training.valid_sample import SEED, stratified_rows

CAP = 60
DEV = ("legal", "medical", "it")  # three 60-row dev sets, one after another


def _dataset(groups: list[tuple[list[str], int]]):
    domains = [labels for labels, n in groups for _ in range(n)]
    return make_dataset([f"s{i}" for i in range(len(domains))],
                        [f"t{i}" for i in range(len(domains))], domains)


def test_sampling_keeps_every_group_in_proportion_and_in_order() -> None:
    # 80 a, 15 b, 2 a+c (a pair of two dev sets: a group of its own), 3 without labels
    ds = _dataset([(["a"], 80), (["b"], 15), (["c", "a"], 2), ([], 3)])
    sample = stratified_rows(ds, 20, seed=5)
    assert len(sample) == 20 and list(sample.rows) == sorted(set(sample.rows))
    assert sample.counts == {(): (1, 3), ("a",): (15, 80), ("a", "c"): (1, 2), ("b",): (3, 15)}
    domains = [ds[int(i)]["domains"] for i in sample.rows]
    assert sum(d == ["a"] for d in domains) == 15 and sum(d == ["c", "a"] for d in domains) == 1
    # deterministic: the same rows again, from the labels alone as well as from the dataset
    again = stratified_rows([r["domains"] for r in ds], 20, seed=5)
    assert np.array_equal(sample.rows, again.rows)
    assert not np.array_equal(sample.rows, stratified_rows(ds, 20, seed=6).rows)
    assert stratified_rows(ds, 20).seed == SEED
    line = sample.describe("valid")
    assert line == ("valid: 20 of 100 rows (training.valid_max_sentences=20), stratified by "
                    "domain, seed 5: (no label) 1/3, a 15/80, a+c 1/2, b 3/15")


def test_sampling_below_the_number_of_groups_and_without_a_cap() -> None:
    ds = _dataset([(["a"], 2), (["b"], 9), (["c"], 9), (["d"], 1)])
    two = stratified_rows(ds, 2)  # one row of the largest groups, ties by label
    assert {k: v[0] for k, v in two.counts.items()} == {("a",): 0, ("b",): 1, ("c",): 1,
                                                         ("d",): 0}
    assert len(two) == 2 and "2 group(s) left out" in two.describe()
    assert len(stratified_rows(ds, 4)) == 4
    assert all(taken == 1 for taken, _ in stratified_rows(ds, 4).counts.values())
    for cap in (0, 21, 50):  # no cap, or one the split does not reach: every row
        assert list(stratified_rows(ds, cap).rows) == list(range(21))
    for cap in range(1, 21):  # exactly the cap, never more rows of a group than it has
        sample = stratified_rows(ds, cap)
        assert len(sample) == cap
        assert all(taken <= n for taken, n in sample.counts.values())


def _raw(multi30k: Path, multidomain: Path, tmp: Path, name: str) -> dict:
    raw = _small(multi30k, multidomain, tmp, name, max_steps=2, valid_every=100000,
                 max_epochs=0, valid_max_sentences=CAP, save_every_minutes=0)
    raw["data"]["train"] += [{"kind": "text", "prefix": str(multidomain / d / "train"),
                              "domains": [d], "max_pairs": 100} for d in DEV]
    raw["data"]["valid"] = [{"kind": "text", "prefix": str(multidomain / d / "dev"),
                             "domains": [d], "max_pairs": CAP} for d in DEV]
    raw["data"]["test"] = []
    return raw


def test_capped_validation_scores_every_domain_on_real_data(multi30k, multidomain, tmp_path,
                                                            caplog) -> None:
    caplog.set_level(logging.INFO, logger="translate.train")
    trainer = Trainer(config.from_dict(_raw(multi30k, multidomain, tmp_path, "run")))
    trainer.fit()
    run = tmp_path / "run"
    domains = list(trainer.data.domains["valid"])
    assert len(domains) == 3 * CAP and domains[:CAP] == [["legal"]] * CAP  # the first rows
    valid = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "valid/loss" in r]
    assert valid and all(f"valid/bleu/{d}" in valid[-1] for d in DEV)  # every domain scored
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("valid: ")]
    assert lines == [f"valid: {CAP} of {3 * CAP} rows (training.valid_max_sentences={CAP}), "
                     f"stratified by domain, seed {SEED}: it 20/60, legal 20/60, medical 20/60"]
    # the same sample twice: drawn again, and by the resumed run
    sub, sources, references, rows_domains = trainer._valid_samples["valid", CAP]
    assert len(sub) == len(sources) == len(references) == CAP  # the sample's size is the cap
    sample = stratified_rows(domains, CAP)
    assert sources == [trainer.data.sources["valid"][i] for i in sample.rows.tolist()]
    assert np.array_equal(sample.rows, stratified_rows(domains, CAP).rows)
    assert sorted(map(tuple, rows_domains)) == sorted([(d,) for d in DEV for _ in range(20)])
    raw = _raw(multi30k, multidomain, tmp_path, "run")
    raw["training"]["max_steps"] = 3
    resumed = Trainer(config.from_dict(raw), resume=True)
    resumed.fit()
    again = resumed._valid_samples["valid", CAP]
    assert again[1:] == (sources, references, rows_domains)
    assert again[0].src_ids == sub.src_ids and again[0].label_ids == sub.label_ids
