"""The prepared corpus as plain parallel text under ``data/<name>/``, for people to read.

Training reads its corpus from the Arrow cache (``data.cache_dir``), which nobody opens by
hand, and two of the sources have no readable files at all: the gettext corpus is built from
binary ``.mo`` catalogs, a hub dataset lands in Hugging Face's own cache. What a user wants
to look at -- which sentences the model learns from, which ones it is tested on, how many
and from where -- is written here once per corpus, as the files every NMT toolkit reads:

=====================  ===============================================================
``{split}.{lang}``     one sentence per line, the two languages line by line
``{split}.domains``    each pair's domain labels, comma-separated (``|`` when a label
                       holds a comma; an empty line: none)
``manifest.json``      where the pairs came from, when, how many, the split rule, drops
``catalogs.tsv``       gettext only: each catalog read and the pairs it gave
=====================  ===============================================================

The folder is a copy: editing it changes nothing that trains (point a ``text`` source at
it for that). It is rewritten when its corpus changes (the manifest holds the cache key)
and never replaces a folder that lacks a manifest, which would be someone's own files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import datasets

from translate.config import DataConfig, SourceConfig
from translate.data.corpus import SPLITS, Corpus
from translate.data.encoded import publish
from translate.data.linebreaks import one_line
from translate.data.schema import DataError

MANIFEST = "manifest.json"
ROWS = 10_000  # pairs written per block
UNREADABLE_KINDS = ("gettext", "hub")  # sources with no plain-text file of their own


def _base(source: SourceConfig) -> str:
    """A short name for where one source's pairs come from."""
    if source.kind == "gettext":
        return "gettext"
    if source.kind == "hub":
        return Path(source.name or "hub").name or "hub"  # owner/multi30k -> multi30k
    path = Path((source.prefix if source.kind == "text" else source.path) or "corpus")
    return path.parent.name or path.stem  # ../shared/data/multi30k/train -> multi30k


def corpus_name(cfg: DataConfig) -> str:
    """The corpus's folder under ``data.dir``: ``data.name``, else its sources' names and
    its languages (``gettext-en-de``; several sources: ``multi30k+8-de-en``)."""
    if cfg.name:
        name = cfg.name
    else:
        bases: list[str] = []
        for group in ("train", "unsplit", "valid", "test"):
            bases += [b for b in map(_base, getattr(cfg, group)) if b not in bases]
        base = bases[0] if len(bases) == 1 else f"{bases[0]}+{len(bases) - 1}"
        langs = f"-{cfg.src_lang}-{cfg.tgt_lang}"
        name = base if base.endswith(langs) else base + langs
    return re.sub(r"[^\w.+-]", "-", name).strip(".") or "corpus"


def needs_copy(cfg: DataConfig) -> bool:
    """Whether training writes the readable copy: when a source has no readable files."""
    return cfg.dir is not None and any(
        s.kind in UNREADABLE_KINDS for g in ("train", "valid", "test", "unsplit")
        for s in getattr(cfg, g))


def write_corpus(corpus: Corpus, cfg: DataConfig,
                 log: Callable[[str], None] = print) -> Path | None:
    """Write ``corpus`` under ``data.dir`` (unless it is there already); returns its folder,
    None when ``data.dir`` is null. Recorded in ``corpus.report["corpus_dir"]``."""
    if cfg.dir is None:
        return None
    folder = Path(cfg.dir) / corpus_name(cfg)
    if _current(folder, corpus.key):
        corpus.report["corpus_dir"] = str(folder)
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise DataError(f"{folder.parent}: cannot write the corpus there "
                        f"({err.strerror or err}); set data.dir elsewhere, or null") from None
    try:
        files, joined = {}, 0
        sep = "|" if any("," in label for label in corpus.labels) else ","
        for split in SPLITS:
            files[split], n = _write_split(corpus.splits[split], split, tmp, cfg, sep)
            joined += n
        manifest = _manifest(corpus, cfg, files, joined)
        manifest["domains_separator"] = sep
        if gettext := _gettext_manifest(corpus.report):
            manifest["gettext"] = _gettext_summary(gettext, tmp / "catalogs.tsv")
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n",
                                    encoding="utf-8")
        _check_replaceable(folder)
        publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pairs = ", ".join(f"{s} {len(corpus.splits[s])}" for s in SPLITS)
    log(f"data: wrote the corpus as plain text to {folder}/ ({pairs} pairs)")
    corpus.report["corpus_dir"] = str(folder)
    return folder


def read_manifest(folder: Path) -> dict | None:
    """``folder``'s manifest, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _current(folder: Path, key: str) -> bool:
    """True when ``folder`` holds this corpus, every file it lists present."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("cache_key") != key:
        return False
    names = [n for split in manifest.get("files", {}).values() for n in split]
    return all((folder / n).is_file() for n in names)


def _check_replaceable(folder: Path) -> None:
    if folder.exists() and read_manifest(folder) is None:
        raise DataError(f"{folder}: exists but was not written by translate (no {MANIFEST}); "
                        "move it, or set data.name to another folder")


def _write_split(ds: datasets.Dataset, split: str, out: Path, cfg: DataConfig,
                 sep: str) -> tuple[list[str], int]:
    """``split``'s sources, targets and labels, one pair per line; returns the file names
    and how many sentences held a line break (written as a space: one pair, one line)."""
    names = [f"{split}.{cfg.src_lang}", f"{split}.{cfg.tgt_lang}", f"{split}.domains"]
    table = ds.with_format("arrow")
    joined = 0
    handles = [open(out / n, "w", encoding="utf-8", newline="\n") for n in names]
    try:
        for start in range(0, len(ds), ROWS):
            block = table[start:start + ROWS]
            for handle, column in zip(handles[:2], ("src", "tgt"), strict=True):
                for text in block.column(column).to_pylist():
                    line = one_line(text)
                    joined += line != text
                    handle.write(line + "\n")
            for labels in block.column("domains").to_pylist():
                handles[2].write(sep.join(labels) + "\n")
    finally:
        for handle in handles:
            handle.close()
    return names, joined


def _split_rule(cfg: DataConfig) -> dict:
    """How the pairs were divided into train/valid/test, in words and in settings."""
    rule: dict = {}
    given = [g for g in SPLITS if getattr(cfg, g)]
    if given:
        rule["given"] = ("the sources under " + ", ".join(f"data.{g}" for g in given)
                         + " keep the split they are listed under")
    if cfg.unsplit:
        sp = cfg.split
        rule["hash"] = (f"the data.unsplit sources: by a hash of the source sentence (sha1, "
                        f"seed {sp.seed!r}): {sp.valid_fraction:.1%} valid (at most "
                        f"{sp.max_valid}), {sp.test_fraction:.1%} test (at most {sp.max_test}), "
                        "the rest train; a source sentence is in one split only")
        rule["settings"] = dataclasses.asdict(sp)
    return rule


def _manifest(corpus: Corpus, cfg: DataConfig, files: dict, joined: int) -> dict:
    report = corpus.report
    return {
        "name": corpus_name(cfg),
        "languages": {"src": cfg.src_lang, "tgt": cfg.tgt_lang},
        "pairs": {s: len(corpus.splits[s]) for s in SPLITS},
        "prepared": report.get("prepared"),  # when the corpus was built (None: before this
        "written": datetime.now(UTC).replace(microsecond=0).isoformat(),  # was recorded)
        "sources": report.get("sources", []),
        "split": _split_rule(cfg),
        "cleaning": dataclasses.asdict(cfg.cleaning),
        "max_train_pairs": cfg.max_train_pairs,
        "dropped": report.get("dropped", {}),
        "labels": corpus.labels,
        "line_breaks_as_spaces": joined,
        "files": files,
        "cache_key": corpus.key,
        "cache_path": report.get("cache_path"),
    }


def _gettext_manifest(report: dict) -> dict | None:
    """The gettext build's own manifest (kept in the cache entry), when the corpus has one."""
    path = report.get("manifest")
    if not isinstance(path, str):
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "catalogs" in data else None


def _gettext_summary(manifest: dict, catalogs_tsv: Path) -> dict:
    """The gettext manifest without its long per-catalog list, which goes to a TSV file."""
    catalogs = manifest.get("catalogs", {})
    catalogs_tsv.write_text("catalog\tpairs\n" + "".join(
        f"{path}\t{n}\n" for path, n in sorted(catalogs.items())), encoding="utf-8")
    summary = {k: v for k, v in manifest.items() if k != "catalogs"}
    summary["catalogs"] = len(catalogs)
    return summary
