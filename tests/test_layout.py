"""The top-level layout a user meets: data/ holds the corpora as readable parallel text, and
CI installs the browser the page test drives.

data/<corpus>/ is the prepared corpus (split, cleaned) as ``{split}.{lang}`` line files with
``{split}.domains`` and a manifest; it is generated, so git ignores all of data/ but its
README. The corpora are real: catalogs of this machine, Multi30k beside the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from translate import config
from translate.data import DataError, load_corpus
from translate.data.__main__ import main as data_main
from translate.data.corpus import SPLITS
from translate.data.export import corpus_name, needs_copy, read_manifest, write_corpus
from translate.data.schema import columns
from translate.runs.rundir import RunDir
from translate.training.trainer import Trainer

CONFIGS = ROOT / "configs"
GERMAN = Path("/usr/share/locale/de/LC_MESSAGES")
# Small catalogs of GNU tools most Debian systems carry; a few hundred real messages.
CATALOGS = ("sed.mo", "grep.mo", "xz.mo", "findutils.mo", "gettext-runtime.mo", "psmisc.mo")


def _quiet(_msg: str) -> None:
    pass


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") or not text
    return text.split("\n")[:-1]


@pytest.fixture()
def catalogs(tmp_path: Path) -> Path:
    """A locale folder with copies of a few of this machine's German catalogs."""
    found = [GERMAN / n for n in CATALOGS if (GERMAN / n).is_file()]
    if len(found) < 2:
        pytest.skip("fewer than two of the GNU tools' German catalogs on this host")
    root = tmp_path / "locale"
    (root / "de" / "LC_MESSAGES").mkdir(parents=True)
    for path in found:
        shutil.copy(path, root / "de" / "LC_MESSAGES" / path.name)
    return root


def _gettext_config(tmp_path: Path, catalogs: Path, **training) -> dict:
    return {
        "data": {"src_lang": "en", "tgt_lang": "de", "cache_dir": str(tmp_path / "cache"),
                 "dir": str(tmp_path / "data"),
                 "unsplit": [{"kind": "gettext", "locale_dirs": [str(catalogs)]}],
                 "split": {"valid_fraction": 0.1, "test_fraction": 0.1}},
        "tokenizer": {"vocab_size": 400, "max_tokens": 48},
        "model": {"emb_dim": 32, "enc_hidden": 32, "enc_layers": 1, "dec_hidden": 64,
                  "dec_layers": 1, "tagger": {"hidden": 16}},
        "training": {"run_dir": str(tmp_path / "run"), "device": "cpu", "precision": "fp32",
                     "num_threads": 1, "max_tokens": 400, "max_epochs": 0, **training},
        "logging": {"wandb": "disabled"},
    }


# --------------------------------------------------------------------------- git, names


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_git_keeps_the_data_readme_and_ignores_the_corpora() -> None:
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("data/gettext-en-de/train.en") and ignored("data/any/manifest.json")
    assert not ignored("data/README.md")
    tracked = subprocess.run(["git", "ls-files", "data"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked == ["data/README.md"]


def test_each_corpus_gets_its_own_folder_name() -> None:
    def name(cfg: str, *sets: str) -> str:
        return corpus_name(config.load(CONFIGS / cfg, list(sets)).data)

    assert name("default.yaml") == "gettext-en-de"
    assert name("default.yaml", "data.tgt_lang=fr") == "gettext-en-fr"
    assert name("multi30k.yaml") == name("quality.yaml") == "multi30k-de-en"
    assert name("multidomain.yaml") == "multidomain-de-en"
    hub = "data.train[0]={kind: hub, name: bentrevett/multi30k, split: train}"
    assert name("multi30k.yaml", hub) == "multi30k-de-en"
    assert name("multi30k.yaml", "data.name=my corpus/v2") == "my-corpus-v2"
    # training writes the copy only where the corpus has no readable files of its own
    assert needs_copy(config.load(CONFIGS / "default.yaml").data)
    assert needs_copy(config.load(CONFIGS / "multi30k.yaml", [hub]).data)
    assert not needs_copy(config.load(CONFIGS / "multi30k.yaml").data)
    assert not needs_copy(config.load(CONFIGS / "default.yaml", ["data.dir=null"]).data)


def test_data_readme_fetch_command_gives_hub_sources() -> None:
    """The Hugging Face names data/README.md gives load as this config's sources."""
    text = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    sets = re.findall(r"--set '([^']+)'", text)
    assert len(sets) == 3
    data = config.load(CONFIGS / "multi30k.yaml", sets).data
    assert [(s.kind, s.name, s.split) for s in data.train + data.valid + data.test] == [
        ("hub", "bentrevett/multi30k", "train"), ("hub", "bentrevett/multi30k", "validation"),
        ("hub", "bentrevett/multi30k", "test")]
    for cfg in ("multi30k.yaml", "multidomain.yaml"):  # the folders the configs read
        for source in config.load(CONFIGS / cfg).data.train:
            assert str(Path(source.prefix).parent.parent) in text or \
                str(Path(source.prefix).parent) in text, source.prefix


# --------------------------------------------------------------------------- the copy


def test_a_gettext_corpus_is_written_as_plain_parallel_text(catalogs: Path,
                                                             tmp_path: Path) -> None:
    cfg = config.from_dict(_gettext_config(tmp_path, catalogs, max_steps=1)).data
    corpus = load_corpus(cfg, log=_quiet)
    folder = write_corpus(corpus, cfg, log=_quiet)
    assert folder == tmp_path / "data" / "gettext-en-de"
    assert corpus.report["corpus_dir"] == str(folder)
    for split in SPLITS:  # line for line the pairs the cache holds: nothing lost or added
        src, tgt, domains = columns(corpus.splits[split], "src", "tgt", "domains")
        assert _lines(folder / f"{split}.en") == src and len(src) > 0
        assert _lines(folder / f"{split}.de") == tgt
        assert _lines(folder / f"{split}.domains") == [",".join(d) for d in domains]
    manifest = read_manifest(folder)
    assert manifest["pairs"] == {s: len(corpus.splits[s]) for s in SPLITS}
    assert manifest["languages"] == {"src": "en", "tgt": "de"}
    assert manifest["sources"][0]["source"] == f"gettext:{catalogs}"
    assert manifest["sources"][0]["rows_per_split"]["train"] >= manifest["pairs"]["train"]
    assert "seed 'translate'" in manifest["split"]["hash"]
    assert manifest["split"]["settings"]["valid_fraction"] == 0.1
    assert manifest["prepared"] <= manifest["written"]
    assert manifest["cache_key"] == corpus.key and manifest["labels"] == corpus.labels
    copied = sorted(p.name for p in (catalogs / "de" / "LC_MESSAGES").iterdir())
    assert manifest["gettext"]["catalogs"] == len(copied)
    rows = _lines(folder / "catalogs.tsv")
    assert rows[0] == "catalog\tpairs" and sorted(Path(r.split("\t")[0]).name
                                                   for r in rows[1:]) == copied

    # Written once per corpus: the same corpus again leaves the files as they are.
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = load_corpus(cfg, log=_quiet)
    assert write_corpus(again, cfg, log=_quiet) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    # Another corpus under the same name replaces it; a folder of the user's is kept.
    cfg.cleaning.max_chars = 20
    shorter = load_corpus(cfg, log=_quiet)
    write_corpus(shorter, cfg, log=_quiet)
    assert read_manifest(folder)["cache_key"] == shorter.key != corpus.key
    assert len(_lines(folder / "train.en")) == len(shorter.splits["train"]) < \
        len(corpus.splits["train"])
    mine = tmp_path / "data" / "mine"
    mine.mkdir()
    (mine / "train.en").write_text("my own\n", encoding="utf-8")
    cfg.name = "mine"
    with pytest.raises(DataError, match=r"mine: exists but was not written by translate"):
        write_corpus(shorter, cfg, log=_quiet)
    assert [p.name for p in mine.iterdir()] == ["train.en"]


def test_training_on_gettext_writes_the_copy_and_the_run_records_it(catalogs: Path,
                                                                    tmp_path: Path) -> None:
    raw = _gettext_config(tmp_path, catalogs, max_steps=2, valid_every=2)
    Trainer(config.from_dict(raw)).fit()
    folder = tmp_path / "data" / "gettext-en-de"
    manifest = read_manifest(folder)
    assert manifest is not None and all((folder / f"{s}.en").is_file() for s in SPLITS)
    summary = RunDir(tmp_path / "run").read_summary()
    assert summary["data"]["corpus_dir"] == str(folder)
    assert summary["data"]["pairs"] == manifest["pairs"]
    assert summary["data"]["sources"][0]["source"] == f"gettext:{catalogs}"
    assert Path(summary["data"]["cache_path"]) == Path(manifest["cache_path"])


def test_the_data_command_writes_any_corpus(multi30k: Path, tmp_path: Path, capsys) -> None:
    """python -m translate.data writes text corpora too (the way to look at one)."""
    assert data_main(["--config", str(CONFIGS / "multi30k.yaml"), "--quiet",
                      "--set", f"data.cache_dir={tmp_path / 'cache'}",
                      "--set", f"data.dir={tmp_path / 'data'}",
                      "--set", f"data.train[0].prefix={multi30k / 'val'}",
                      "--set", f"data.valid[0].prefix={multi30k / 'val'}",
                      "--set", "data.valid[0].max_pairs=100",
                      "--set", f"data.test[0].prefix={multi30k / 'test_2016_flickr'}"]) == 0
    folder = tmp_path / "data" / "multi30k-de-en"
    assert f"plain text: {folder}/" in capsys.readouterr().out
    assert _lines(folder / "valid.de") == _lines(multi30k / "val.de")[:100]
    assert _lines(folder / "test.en") == _lines(multi30k / "test_2016_flickr.en")
    assert set(_lines(folder / "train.domains")) == {"captions"}
    assert read_manifest(folder)["split"] == {
        "given": "the sources under data.train, data.valid, data.test keep the split they "
                 "are listed under"}


@pytest.mark.host_dependent  # the README's demo sentences are in this machine's catalogs
def test_the_readme_demo_lines_are_in_the_default_corpus_test_split(tmp_path: Path) -> None:
    if not GERMAN.is_dir():
        pytest.skip("no German gettext catalogs on this host")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    printed = re.search(r"printf '([^']*)' \| \.venv/bin/python -m translate\.infer", readme)
    demo = [line for line in printed.group(1).split("\\n") if line]
    assert len(demo) == 4
    cfg = config.load(CONFIGS / "default.yaml", [f"data.cache_dir={tmp_path / 'cache'}",
                                                 f"data.dir={tmp_path / 'data'}"]).data
    folder = write_corpus(load_corpus(cfg, log=_quiet), cfg, log=_quiet)
    test, train = set(_lines(folder / "test.en")), set(_lines(folder / "train.en"))
    assert all(line in test and line not in train for line in demo), demo


# --------------------------------------------------------------------------- CI


def _stubs(tmp_path: Path, uid: int) -> tuple[Path, Path]:
    """``id`` and ``apt-get`` that record their calls (a test must not install packages)."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls"
    stubs.mkdir()
    (stubs / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (stubs / "apt-get").write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND apt-get $*" >> {calls}\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    return stubs, calls


@pytest.mark.parametrize("uid", [0, 1000])
def test_ci_installs_the_page_test_browser_when_it_can(tmp_path: Path, uid: int) -> None:
    stubs, calls = _stubs(tmp_path, uid)
    env = {k: v for k, v in os.environ.items() if k != "DEBIAN_FRONTEND"}
    env["PATH"] = f"{stubs}:{os.environ['PATH']}"
    missing = [str(tmp_path / "no" / "chromium"), str(tmp_path / "no" / "chromedriver")]
    proc = subprocess.run([str(ROOT / ".ci" / "browser"), *missing], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    if uid == 0:
        assert _lines(calls) == [
            " apt-get update -qq",
            "noninteractive apt-get install -y -qq --no-install-recommends chromium "
            "chromium-driver"]
    else:  # cannot install: says so, and CI goes on (the page test then skips)
        assert not calls.exists() and "needs root and apt-get" in proc.stderr
    present = [str(ROOT / ".ci" / "browser"), str(ROOT / ".ci" / "run")]  # executables
    calls.unlink(missing_ok=True)
    proc = subprocess.run([str(ROOT / ".ci" / "browser"), *present], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "" and not calls.exists()


def test_ci_installs_the_browser_before_the_readme_test_command() -> None:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    steps = [line for line in lines if line and not line.startswith("#")]
    assert steps[-2:] == [".ci/browser", "python3 -m venv .venv && .venv/bin/pip install -q "
                          "-e '.[dev]' && .venv/bin/python -m pytest -q"]
    # the browser script's defaults are where the page test looks for the browser
    serve_test = (ROOT / "tests" / "test_serve.py").read_text(encoding="utf-8")
    browser = (ROOT / ".ci" / "browser").read_text(encoding="utf-8")
    for path in re.findall(r'Path\("(/usr/bin/chrom\w+)"\)', serve_test):
        assert f":-{path}}}" in browser, path
    assert len(re.findall(r'Path\("(/usr/bin/chrom\w+)"\)', serve_test)) == 2
