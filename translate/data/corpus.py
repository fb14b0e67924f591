"""Build train/valid/test splits from the configured sources, clean them, and cache them.

Order of work: read every source -> strip whitespace -> hash-split the ``unsplit`` sources
(keyed on the source sentence, so one sentence never lands in two splits) -> union the labels
of identical pairs -> drop by reason (empty sides everywhere; length, ratio, duplicates and
``max_train_pairs`` in training only) -> save. Every dropped pair is counted in
``report["dropped"][split][reason]`` and logged, so nothing disappears silently.

The prepared splits are cached with ``save_to_disk`` under ``cache_dir/<key>``; the key
hashes the data config and the path, size and mtime of every input file, so a second run
with the same inputs starts in seconds and any edit rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from translate.config import DataConfig, SourceConfig
from translate.data.schema import DataError, columns, make_dataset
from translate.data.sources import input_files, load_source

SPLITS = ("train", "valid", "test")
CACHE_VERSION = 1  # bump when the preparation logic changes


@dataclass
class Corpus:
    splits: dict[str, datasets.Dataset]
    labels: list[str]
    report: dict
    key: str = ""  # the cache key: what the encoded corpus and the cached tokenizer build on


# --------------------------------------------------------------------------- caching


def _fingerprint(path: Path) -> list:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path.resolve()), st.st_size if path.is_file() else None, st.st_mtime_ns]


def cache_key(cfg: DataConfig) -> str:
    """Hash of the data config and every input file's path, size and mtime_ns."""
    files = []
    for group in ("train", "valid", "test", "unsplit"):
        for source in getattr(cfg, group):
            files += [_fingerprint(p) for p in input_files(source, cfg.src_lang, cfg.tgt_lang)]
    fields = dataclasses.asdict(cfg)
    fields.pop("sampling")  # how pairs are drawn in training, not which pairs there are
    blob = json.dumps({"v": CACHE_VERSION, "cfg": fields, "files": files},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _load_cached(entry: Path) -> Corpus | None:
    report_path = entry / "report.json"
    if not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        splits = _load_splits(entry, report["pairs"])
    except Exception:  # a half-written or foreign cache entry: rebuild it
        return None
    return Corpus(splits=splits, labels=report["labels"], report=report)


def _load_splits(entry: Path, pairs: dict[str, int]) -> dict[str, datasets.Dataset]:
    # datasets cannot load an empty dataset it saved itself (no record batches), so empty
    # splits are not written and come back as fresh empty datasets.
    return {s: datasets.load_from_disk(str(entry / s)) if pairs[s] else make_dataset([], [], [])
            for s in SPLITS}


def _save(entry: Path, corpus: Corpus) -> None:
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # three "Saving the dataset" bars per run are noise
    try:
        for name, ds in corpus.splits.items():
            if len(ds):
                ds.save_to_disk(str(tmp / name))
    finally:
        if bars:
            datasets.enable_progress_bars()
    manifest = corpus.report.get("manifest_data")
    if manifest is not None:
        (tmp / "gettext_manifest.json").write_text(json.dumps(manifest, indent=1),
                                                   encoding="utf-8")
    report = {k: v for k, v in corpus.report.items() if k != "manifest_data"}
    (tmp / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if entry.exists():
        shutil.rmtree(entry)
    os.replace(tmp, entry)


# --------------------------------------------------------------------------- splitting


def hash_unit(text: str, seed: str) -> float:
    """A stable number in [0, 1) for a sentence (sha1, not Python's salted ``hash``)."""
    digest = hashlib.sha1(f"{seed}\x00{text}".encode()).digest()
    return struct.unpack(">Q", digest[:8])[0] / 2**64


def hash_split(src: list[str], cfg: DataConfig) -> list[str]:
    """Assign each row of an unsplit source to a split by the hash of its source sentence.

    The caps (``max_valid``/``max_test``) move whole sentences (all their rows) back to
    train, lowest hash first kept, so the guarantee "a source sentence is in one split" holds.
    """
    sp = cfg.split
    units = {s: hash_unit(s, sp.seed) for s in set(src)}
    assign = {}
    for s, u in units.items():
        assign[s] = ("valid" if u < sp.valid_fraction else
                     "test" if u < sp.valid_fraction + sp.test_fraction else "train")
    rows_per = Counter(src)
    for split, cap in (("valid", sp.max_valid), ("test", sp.max_test)):
        taken = 0
        for s in sorted((s for s in units if assign[s] == split), key=lambda s: (units[s], s)):
            if taken + rows_per[s] > cap:
                assign[s] = "train"
            else:
                taken += rows_per[s]
    return [assign[s] for s in src]


# --------------------------------------------------------------------------- cleaning


class _Rows:
    def __init__(self) -> None:
        self.src: list[str] = []
        self.tgt: list[str] = []
        self.domains: list[list[str]] = []

    def add(self, s: str, t: str, d: list[str]) -> None:
        self.src.append(s)
        self.tgt.append(t)
        self.domains.append(d)


def _clean(split: str, rows: _Rows, cfg: DataConfig, dropped: Counter) -> _Rows:
    c = cfg.cleaning
    # Identical pairs carry the union of their labels wherever they occur. Without any label
    # (most large corpora) there is nothing to merge, and a set per pair is not built.
    union: dict[tuple[str, str], set[str]] = {}
    if any(rows.domains):
        for s, t, d in zip(rows.src, rows.tgt, rows.domains, strict=True):
            union.setdefault((s, t), set()).update(d)
    out, seen = _Rows(), set()
    for s, t in zip(rows.src, rows.tgt, strict=True):
        if not s or not t:
            dropped["empty_side"] += 1
            continue
        if split == "train":
            if len(s) > c.max_chars or len(t) > c.max_chars:
                dropped["too_long"] += 1
                continue
            short, long_ = sorted((len(s), len(t)))
            if short >= c.min_chars_for_ratio and long_ / short > c.max_ratio:
                dropped["length_ratio"] += 1
                continue
            if c.dedup:
                if (s, t) in seen:
                    dropped["duplicate"] += 1
                    continue
                seen.add((s, t))
            if cfg.max_train_pairs and len(out.src) >= cfg.max_train_pairs:
                dropped["max_train_pairs"] += 1
                continue
        out.add(s, t, sorted(union[(s, t)]) if union else [])
    return out


# --------------------------------------------------------------------------- building


def _build(cfg: DataConfig, log: Callable[[str], None]) -> Corpus:
    rows = {s: _Rows() for s in SPLITS}
    report: dict = {"sources": [], "dropped": {s: {} for s in SPLITS}}
    manifests = []
    pool: list[tuple[dict, list[str], list[str], list[list[str]]]] = []
    groups = [(s, s) for s in SPLITS] + [("unsplit", None)]
    for group, split in groups:
        source: SourceConfig
        for i, source in enumerate(getattr(cfg, group)):
            ds, info = load_source(source, cfg.src_lang, cfg.tgt_lang, log=log)
            info["group"] = f"data.{group}[{i}]"
            if "manifest" in info:
                manifests.append(info.pop("manifest"))
            src, tgt, doms = columns(ds, "src", "tgt", "domains")
            src = [x.strip() for x in src]
            tgt = [x.strip() for x in tgt]
            if split:
                info["rows_per_split"] = {split: len(src)}
                for s, t, d in zip(src, tgt, doms, strict=True):
                    rows[split].add(s, t, d)
            else:
                pool.append((info, src, tgt, doms))
            report["sources"].append(info)
            log(f"data: {info['group']} {info['source']}: {len(src)} pairs")
    if pool:
        # One split decision over all unsplit sources, so a sentence that two sources share
        # cannot end up on both sides of a cap.
        targets = hash_split([s for _, src, _, _ in pool for s in src], cfg)
        pos = 0
        for info, src, tgt, doms in pool:
            mine = targets[pos:pos + len(src)]
            pos += len(src)
            info["rows_per_split"] = dict(Counter(mine))
            for s, t, d, where in zip(src, tgt, doms, mine, strict=True):
                rows[where].add(s, t, d)
    splits, labels = {}, set()
    for split in SPLITS:
        dropped: Counter = Counter()
        cleaned = _clean(split, rows[split], cfg, dropped)
        report["dropped"][split] = dict(sorted(dropped.items()))
        for reason, n in sorted(dropped.items()):
            log(f"data: {split}: dropped {n} pairs ({reason})")
        splits[split] = make_dataset(cleaned.src, cleaned.tgt, cleaned.domains)
        for d in cleaned.domains:
            labels.update(d)
    if len(splits["train"]) == 0:
        raise DataError("data: no training pairs left after cleaning (see the drops above)")
    (train_src,) = columns(splits["train"], "src")
    overlap = {}
    for split in ("valid", "test"):
        held = set(columns(splits[split], "src")[0])
        overlap[split] = sum(1 for s in train_src if s in held)
        if overlap[split]:
            log(f"data: {overlap[split]} training pairs share their source sentence with "
                f"{split} (explicitly given splits are left as they are)")
    report["overlap_train_src"] = overlap
    report["pairs"] = {s: len(ds) for s, ds in splits.items()}
    report["domains"] = {
        s: dict(sorted(Counter(lab for d in columns(ds, "domains")[0] for lab in d).items()))
        for s, ds in splits.items()
    }
    report["labels"] = sorted(labels)
    if manifests:
        report["manifest_data"] = manifests[0] if len(manifests) == 1 else manifests
    return Corpus(splits=splits, labels=sorted(labels), report=report)


def load_corpus(cfg: DataConfig, log: Callable[[str], None] = print) -> Corpus:
    """Prepared train/valid/test splits for ``cfg`` (from the cache when inputs are unchanged)."""
    start = time.perf_counter()
    key = cache_key(cfg)
    entry = Path(cfg.cache_dir) / f"corpus-{key}"
    corpus = _load_cached(entry)
    if corpus is not None:
        corpus.report["cache_hit"] = True
        log(f"data: loaded prepared corpus from cache {entry}")
    else:
        corpus = _build(cfg, log)
        corpus.report["cache_hit"] = False
        corpus.report["cache_path"] = str(entry)
        if "manifest_data" in corpus.report:
            corpus.report["manifest"] = str(entry / "gettext_manifest.json")
        _save(entry, corpus)
        corpus.report.pop("manifest_data", None)
        corpus.splits = _load_splits(entry, corpus.report["pairs"])
    corpus.report["seconds"] = round(time.perf_counter() - start, 3)
    corpus.key = key
    return corpus


def format_report(report: dict) -> str:
    """A human-readable summary: pairs and domains per split, drops by reason, cache."""
    lines = []
    pairs = report.get("pairs", {})
    lines.append("pairs: " + ", ".join(f"{s} {n}" for s, n in pairs.items()))
    labels = report.get("labels", [])
    lines.append(f"labels ({len(labels)}): {', '.join(labels) if labels else '-'}")
    domains = report.get("domains", {})
    if labels:
        width = max(len(lab) for lab in labels)
        lines.append("per domain:".ljust(width + 2) + "".join(f"{s:>9}" for s in SPLITS))
        for lab in labels:
            counts = "".join(f"{domains.get(s, {}).get(lab, 0):>9}" for s in SPLITS)
            lines.append(f"  {lab:<{width}}{counts}")
    for split in SPLITS:
        dropped = report.get("dropped", {}).get(split, {})
        text = ", ".join(f"{r} {n}" for r, n in dropped.items()) or "none"
        lines.append(f"dropped ({split}): {text}")
    truncated = report.get("truncated")  # added by translate.prepare, once tokenized
    if truncated:
        lines.append("cut to tokenizer.max_tokens: " + ", ".join(
            f"{s} src {n['src']} tgt {n['tgt']}" for s, n in truncated.items()))
    overlap = report.get("overlap_train_src", {})
    if any(overlap.values()):
        lines.append("train pairs whose source is also in: "
                     + ", ".join(f"{s} {n}" for s, n in overlap.items()))
    for info in report.get("sources", []):
        per = ", ".join(f"{s} {n}" for s, n in info.get("rows_per_split", {}).items())
        lines.append(f"source {info.get('group')}: {info.get('source')} ({per})")
    if report.get("manifest"):
        lines.append(f"gettext manifest: {report['manifest']}")
    hit = "hit" if report.get("cache_hit") else "miss (built)"
    lines.append(f"cache: {hit} {report.get('cache_path', '')} in {report.get('seconds', 0)} s")
    return "\n".join(lines)
