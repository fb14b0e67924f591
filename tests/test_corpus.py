"""Corpus building on the real corpora: splits, labels, cleaning counts, caching, the CLI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from translate import config
from translate.config import CleaningConfig, DataConfig, SourceConfig, SplitConfig
from translate.data import DataError, format_report, load_corpus
from translate.data.__main__ import main
from translate.data.corpus import cache_key, hash_split
from translate.data.schema import columns
from translate.errors import TranslateError

ROOT = Path(__file__).resolve().parents[1]


def _text(prefix: Path, *domains: str) -> SourceConfig:
    return SourceConfig(kind="text", prefix=str(prefix), domains=list(domains))


def _quiet(_msg: str) -> None:
    pass


def _lines(path: Path, n: int | None = None) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:n] if n else lines[:-1]


def test_multi30k_splits(multi30k: Path, tmp_path: Path) -> None:
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path),
                     train=[_text(multi30k / "train", "captions")],
                     valid=[_text(multi30k / "val", "captions")],
                     test=[_text(multi30k / "test_2016_flickr", "captions")])
    corpus = load_corpus(cfg, log=_quiet)
    rep = corpus.report
    assert rep["pairs"]["valid"] == 1014 and rep["pairs"]["test"] == 1000
    assert rep["pairs"]["train"] + sum(rep["dropped"]["train"].values()) == 29000
    assert rep["pairs"]["train"] > 28_900
    assert corpus.labels == ["captions"]
    assert rep["domains"]["valid"] == {"captions": 1014}
    assert set(corpus.splits) == {"train", "valid", "test"}
    assert corpus.splits["valid"].column_names == ["src", "tgt", "domains"]
    assert columns(corpus.splits["test"], "src")[0][0] == _lines(
        multi30k / "test_2016_flickr.de", 1)[0].strip()


def test_multidomain_labels_and_union(multidomain: Path, tmp_path: Path) -> None:
    names = ["chat", "general", "it", "legal"]
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path),
                     cleaning=CleaningConfig(max_chars=10**6, max_ratio=1000),
                     train=[_text(multidomain / n / "train", n) for n in names],
                     valid=[_text(multidomain / n / "dev", n) for n in names])
    corpus = load_corpus(cfg, log=_quiet)
    assert corpus.labels == sorted(names)
    train = corpus.splits["train"]
    src, tgt, doms = columns(train, "src", "tgt", "domains")
    rows = dict(zip(zip(src, tgt, strict=True), doms, strict=True))
    # a real pair found in both the chat and the Tatoeba folders carries both labels
    assert rows[("Auf Wiedersehen!", "Goodbye!")] == ["chat", "general"]
    # Expected counts straight from the files: every distinct pair of a folder carries its
    # label (train is deduplicated; valid keeps repeats, each copy with the union of labels).
    for split, stem in (("train", "train"), ("valid", "dev")):
        folder_pairs = {n: [(a.strip(), b.strip()) for a, b in zip(
            _lines(multidomain / n / f"{stem}.de"), _lines(multidomain / n / f"{stem}.en"),
            strict=True) if a.strip() and b.strip()] for n in names}
        every = [p for n in names for p in folder_pairs[n]]
        for n in names:
            mine = set(folder_pairs[n])
            expected = len(mine) if split == "train" else sum(p in mine for p in every)
            assert corpus.report["domains"][split][n] == expected, (split, n)
    assert corpus.report["domains"]["valid"]["legal"] == 500
    assert corpus.report["pairs"]["train"] + sum(corpus.report["dropped"]["train"].values()) \
        == 1500 + 1500 + 13_845 + 45_980


def test_same_file_two_sources_dedup_merges_labels(multidomain: Path, tmp_path: Path) -> None:
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path),
                     cleaning=CleaningConfig(max_chars=10**6, max_ratio=1000),
                     train=[_text(multidomain / "legal" / "train", "legal"),
                            _text(multidomain / "legal" / "train", "eu")])
    corpus = load_corpus(cfg, log=_quiet)
    n = corpus.report["pairs"]["train"]
    dropped = corpus.report["dropped"]["train"]
    assert n + sum(dropped.values()) == 3000
    assert dropped["duplicate"] >= 1500
    assert corpus.report["domains"]["train"] == {"eu": n, "legal": n}


def test_cleaning_counts_every_drop(multi30k: Path, tmp_path: Path) -> None:
    de, en = _lines(multi30k / "val.de", 50), _lines(multi30k / "val.en", 50)
    de += ["", "Ein Hund.", "x" * 400, "Kurz hier.", de[0], "  " + de[1] + " "]
    en += ["A dog.", "", "x" * 400, "This is a rather long English line.", en[0], en[1]]
    (tmp_path / "c.de").write_text("\n".join(de) + "\n", "utf-8")
    (tmp_path / "c.en").write_text("\n".join(en) + "\n", "utf-8")
    (tmp_path / "v.de").write_text("Gut.\n\n", "utf-8")
    (tmp_path / "v.en").write_text("Good.\nEmpty source.\n", "utf-8")
    logs: list[str] = []
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path / "cache"),
                     cleaning=CleaningConfig(max_chars=300, max_ratio=3.0, min_chars_for_ratio=10),
                     train=[_text(tmp_path / "c")], valid=[_text(tmp_path / "v")])
    corpus = load_corpus(cfg, log=logs.append)
    # the padded copy of line 2 is stripped into an exact duplicate of it
    assert corpus.report["dropped"]["train"] == {"duplicate": 2, "empty_side": 2,
                                                 "length_ratio": 1, "too_long": 1}
    assert corpus.report["dropped"]["valid"] == {"empty_side": 1}
    assert corpus.report["pairs"]["valid"] == 1
    assert any("dropped 2 pairs (empty_side)" in line for line in logs)
    src = columns(corpus.splits["train"], "src")[0]
    assert all(s == s.strip() for s in src)
    total = corpus.report["pairs"]["train"] + sum(corpus.report["dropped"]["train"].values())
    assert total == 56


def test_max_train_pairs_counts_the_rest(multi30k: Path, tmp_path: Path) -> None:
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path), max_train_pairs=100,
                     train=[_text(multi30k / "val")])
    corpus = load_corpus(cfg, log=_quiet)
    assert corpus.report["pairs"]["train"] == 100
    assert sum(corpus.report["dropped"]["train"].values()) == 914
    assert columns(corpus.splits["train"], "src")[0][0] == _lines(multi30k / "val.de", 1)[0]


def test_hash_split_is_deterministic_and_leak_free(multi30k: Path, tmp_path: Path) -> None:
    split = SplitConfig(valid_fraction=0.05, test_fraction=0.05, max_valid=1000, max_test=1200)
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path), split=split,
                     unsplit=[_text(multi30k / "train", "captions"),
                              _text(multi30k / "val", "captions")])
    a = load_corpus(cfg, log=_quiet)
    srcs = {s: set(columns(a.splits[s], "src")[0]) for s in ("train", "valid", "test")}
    assert not srcs["train"] & srcs["valid"] and not srcs["train"] & srcs["test"]
    assert not srcs["valid"] & srcs["test"]
    assert a.report["pairs"]["valid"] <= 1000 and a.report["pairs"]["valid"] > 900
    assert 1000 < a.report["pairs"]["test"] <= 1200
    assert a.report["overlap_train_src"] == {"valid": 0, "test": 0}
    # same assignment from scratch; a different seed gives another one
    sentences = _lines(multi30k / "train.de")
    assert hash_split(sentences, cfg) == hash_split(list(sentences), cfg)
    other = DataConfig(split=SplitConfig(valid_fraction=0.05, test_fraction=0.05, seed="x"))
    assert hash_split(sentences, cfg) != hash_split(sentences, other)
    b = load_corpus(DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "b")}),
                    log=_quiet)
    assert b.report["cache_hit"] is False
    assert columns(b.splits["valid"], "src")[0] == columns(a.splits["valid"], "src")[0]


def test_explicit_split_overlap_is_reported_not_removed(multi30k: Path, tmp_path: Path) -> None:
    de, en = _lines(multi30k / "train.de", 30), _lines(multi30k / "train.en", 30)
    (tmp_path / "v.de").write_text("\n".join(de) + "\n", "utf-8")
    (tmp_path / "v.en").write_text("\n".join(en) + "\n", "utf-8")
    logs: list[str] = []
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path / "c"),
                     train=[_text(multi30k / "val")], valid=[_text(tmp_path / "v")],
                     test=[_text(multi30k / "val")])
    corpus = load_corpus(cfg, log=logs.append)
    assert corpus.report["overlap_train_src"]["test"] == corpus.report["pairs"]["train"]
    assert corpus.report["overlap_train_src"]["valid"] == 0
    assert corpus.report["pairs"]["test"] == 1014
    assert any("share their source sentence with test" in line for line in logs)


def test_cache_hit_and_invalidation(multi30k: Path, tmp_path: Path) -> None:
    for lang in ("de", "en"):
        (tmp_path / f"c.{lang}").write_text(
            "\n".join(_lines(multi30k / f"val.{lang}")) + "\n", "utf-8")
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path / "cache"),
                     train=[_text(tmp_path / "c", "captions")])
    first = load_corpus(cfg, log=_quiet)
    second = load_corpus(cfg, log=_quiet)
    assert first.report["cache_hit"] is False and second.report["cache_hit"] is True
    assert second.report["pairs"] == first.report["pairs"] and second.labels == ["captions"]
    assert columns(second.splits["train"], "src") == columns(first.splits["train"], "src")
    assert "cache: hit" in format_report(second.report)
    # a config change misses
    changed = DataConfig(**{**cfg.__dict__, "max_train_pairs": 10})
    assert load_corpus(changed, log=_quiet).report["cache_hit"] is False
    # a changed file misses and is re-read
    path = tmp_path / "c.de"
    path.write_text(path.read_text("utf-8").replace("Zwei", "ZWEI"), "utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = load_corpus(cfg, log=_quiet)
    assert third.report["cache_hit"] is False
    assert any("ZWEI" in s for s in columns(third.splits["train"], "src")[0])


def test_an_entry_published_meanwhile_is_kept(multi30k: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs started side by side on one corpus both build its cache entry. The one that
    publishes second finds the other's identical copy in place (here it appears just before
    the move, as when the two finish together) and keeps it instead of failing on a
    non-empty directory."""
    cfg = DataConfig(src_lang="de", tgt_lang="en", cache_dir=str(tmp_path / "cache"),
                     train=[_text(multi30k / "val", "captions")])
    entry = tmp_path / "cache" / f"corpus-{cache_key(cfg)}"
    real_replace = os.replace

    def other_run_first(src, dst) -> None:
        if Path(dst) == entry and not entry.exists():
            shutil.copytree(src, entry)  # the other run's copy lands
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", other_run_first)
    built = load_corpus(cfg, log=_quiet)
    monkeypatch.undo()
    assert built.report["pairs"]["train"] == 1014 and built.report["cache_hit"] is False
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temp dir left
    assert load_corpus(cfg, log=_quiet).report["cache_hit"] is True


@pytest.mark.host_dependent  # reads this machine's gettext catalogs
def test_default_config_gettext_corpus(tmp_path: Path) -> None:
    cfg = config.load(ROOT / "configs" / "default.yaml", [f"data.cache_dir={tmp_path}"])
    corpus = load_corpus(cfg.data, log=_quiet)
    rep = corpus.report
    assert 40_000 < rep["pairs"]["train"] < 70_000
    assert rep["pairs"]["valid"] == 1000 and rep["pairs"]["test"] == 1000
    assert "geography-languages" in corpus.labels and "other" not in corpus.labels
    assert Path(rep["manifest"]).is_file()
    again = load_corpus(cfg.data, log=_quiet)
    assert again.report["cache_hit"] is True and again.report["manifest"] == rep["manifest"]
    assert sum(len(d) > 1 for d in columns(again.splits["train"], "domains")[0]) > 1000


def test_cli_summary_and_errors(multi30k: Path, tmp_path: Path, capsys) -> None:
    overrides = ["--set", f"data.cache_dir={tmp_path}", "--set", f"data.dir={tmp_path}",
                 "--set", f"data.train[0].prefix={multi30k / 'val'}",
                 "--set", f"data.valid[0].prefix={multi30k / 'val'}",
                 "--set", f"data.test[0].prefix={multi30k / 'test_2016_flickr'}"]
    assert main(["--config", str(ROOT / "configs" / "multi30k.yaml"), "--quiet", *overrides]) == 0
    out = capsys.readouterr().out
    assert "valid 1014" in out and "captions" in out and "cache: miss" in out
    # User errors propagate to run_main, which prints them in one line (tests/test_cli.py).
    with pytest.raises(TranslateError, match="missing.yaml"):
        main(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(TranslateError, match="nope.de: file not found"):
        main(["--config", str(ROOT / "configs" / "multi30k.yaml"),
              "--set", f"data.train[0].prefix={tmp_path / 'nope'}",
              "--set", f"data.cache_dir={tmp_path}"])


def test_no_training_pairs_left_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "c.de").write_text("\n\n", "utf-8")
    (tmp_path / "c.en").write_text("a\nb\n", "utf-8")
    with pytest.raises(DataError, match="no training pairs"):
        load_corpus(DataConfig(cache_dir=str(tmp_path), train=[_text(tmp_path / "c")]),
                    log=_quiet)
