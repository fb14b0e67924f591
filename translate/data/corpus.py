"""Build train/valid/test splits from the configured sources, clean them, and cache them.

Order of work: read every source -> strip whitespace -> hash-split the ``unsplit`` sources
(keyed on the source sentence, so one sentence never lands in two splits) -> union the labels
of identical pairs -> drop by reason (empty sides everywhere; length, ratio, duplicates and
``max_train_pairs`` in training only) -> save. Every dropped pair is counted in
``report["dropped"][split][reason]`` and logged, so nothing disappears silently.

The pairs never sit in Python lists: sources are read in Arrow tables of bounded size,
stripped and checked pair by pair (:mod:`translate.data.cleaning`), and the survivors staged
on disk, so that the memory of preparation does not grow with the text of the corpus; only
8 bytes a pair (a hash) and a few flags do.

The prepared splits are cached as one Arrow file per split under ``cache_dir/<key>``
(memory-mapped when loaded); the key hashes the data config and the path, size and mtime of
every input file, so a second run with the same inputs starts in seconds and any edit rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from translate.config import DataConfig, SourceConfig
from translate.data.cleaning import SCHEMA, SplitRows, Staged, strip_table
from translate.data.encoded import publish
from translate.data.schema import DataError, make_dataset
from translate.data.sources import input_files, source_tables

SPLITS = ("train", "valid", "test")
CACHE_VERSION = 2  # bump when the preparation logic or the cached layout changes


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
    for key in ("sampling", "dir", "name"):  # how pairs are drawn, where a copy is written:
        fields.pop(key)  # not which pairs there are, so existing cache entries stay valid
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
    """Each split memory-mapped from its Arrow file (an empty split as an empty dataset)."""
    return {s: datasets.Dataset.from_file(str(entry / f"{s}.arrow")) if pairs[s]
            else make_dataset([], [], []) for s in SPLITS}


def _build_entry(cfg: DataConfig, entry: Path, log: Callable[[str], None]) -> dict:
    """Build the corpus into a fresh directory that replaces ``entry`` once complete. Two
    processes that start on the same corpus at once (two runs side by side, or ranks) both
    build it; whichever publishes second keeps the first one's identical copy."""
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report = _build(cfg, tmp, log)
        report["cache_hit"] = False
        report["cache_path"] = str(entry)
        report["prepared"] = datetime.now(UTC).replace(microsecond=0).isoformat()
        manifest = report.pop("manifest_data", None)
        if manifest is not None:
            (tmp / "gettext_manifest.json").write_text(json.dumps(manifest, indent=1),
                                                       encoding="utf-8")
            report["manifest"] = str(entry / "gettext_manifest.json")
        (tmp / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        publish(tmp, entry)  # a second process that built the same entry meanwhile: one stays
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


# --------------------------------------------------------------------------- splitting


def _hash64(text: str, seed: str) -> int:
    """A stable 64-bit number for a sentence (sha1, not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha1(f"{seed}\x00{text}".encode()).digest()[:8], "big")


def hash_unit(text: str, seed: str) -> float:
    """A stable number in [0, 1) for a sentence."""
    return _hash64(text, seed) / 2**64


def _units(sentences: Iterable[str], seed: str) -> np.ndarray:
    """:func:`hash_unit` of each sentence, times 2**64, as exact integers."""
    return np.array([_hash64(s, seed) for s in sentences], dtype=np.uint64)


def split_targets(units: np.ndarray, sentences: Callable[[np.ndarray], list[str]],
                  cfg: DataConfig) -> np.ndarray:
    """The split of each row of the unsplit sources (0 train, 1 valid, 2 test) from its
    :func:`hash_unit` (``units`` times 2**64); ``sentences(rows)`` gives the source
    sentences of some rows, needed for the rows that the caps concern only.

    The caps (``max_valid``/``max_test``) move whole sentences (all their rows) back to
    train, lowest hash first kept, so the guarantee "a source sentence is in one split" holds.
    """
    sp = cfg.split
    unit = units.astype(np.float64) / 2**64  # rounds as int / 2**64 does: one exact scaling
    targets = np.where(unit < sp.valid_fraction, 1,
                       np.where(unit < sp.valid_fraction + sp.test_fraction, 2, 0))
    targets = targets.astype(np.int8)
    for code, cap in ((1, sp.max_valid), (2, sp.max_test)):
        rows = np.flatnonzero(targets == code)
        text = sentences(rows)
        rows_per = Counter(text)
        unit_of = dict(zip(text, unit[rows].tolist(), strict=True))
        moved, taken = set(), 0
        for s in sorted(unit_of, key=lambda s: (unit_of[s], s)):
            if taken + rows_per[s] > cap:
                moved.add(s)
            else:
                taken += rows_per[s]
        back = [r for r, s in zip(rows.tolist(), text, strict=True) if s in moved]
        targets[back] = 0
    return targets


def hash_split(src: list[str], cfg: DataConfig) -> list[str]:
    """The split of each sentence of ``src``, as :func:`split_targets` assigns it."""
    targets = split_targets(_units(src, cfg.split.seed),
                            lambda rows: [src[i] for i in rows.tolist()], cfg)
    return [SPLITS[t] for t in targets.tolist()]


class _Pool:
    """The stripped rows of every unsplit source, staged until one split decision over all
    of them (so a sentence two sources share cannot end up on both sides of a cap)."""

    def __init__(self, path: Path, seed: str) -> None:
        self.path, self.seed = path, seed
        self._writer = pa.ipc.new_file(str(path), SCHEMA)
        self.units: list[np.ndarray] = []
        self.sizes: list[int] = []  # rows per staged batch
        self.sources: list[tuple[dict, int]] = []

    def add(self, table: pa.Table) -> None:
        self.units.append(_units(table["src"].to_pylist(), self.seed))
        for batch in table.cast(SCHEMA).to_batches():
            self._writer.write_batch(batch)
            self.sizes.append(batch.num_rows)

    def route(self, cfg: DataConfig, stages: dict[str, SplitRows]) -> None:
        """Each row to its split's staging, in order; ``rows_per_split`` into each info."""
        self._writer.close()
        staged = Staged(self.path, self.sizes)
        try:
            units = np.concatenate(self.units) if self.units else np.zeros(0, np.uint64)
            targets = split_targets(units, lambda rows: staged.take(rows)["src"].to_pylist(),
                                    cfg)
            pos = 0
            for info, n in self.sources:
                mine = targets[pos:pos + n]
                pos += n
                codes, first = np.unique(mine, return_index=True)
                info["rows_per_split"] = {
                    SPLITS[c]: int((mine == c).sum()) for c in codes[np.argsort(first)].tolist()}
            for start, batch in staged.batches():
                table = pa.Table.from_batches([batch])
                mine = targets[start:start + batch.num_rows]
                for code, split in enumerate(SPLITS):
                    if (mine == code).any():
                        stages[split].add(table.filter(pa.array(mine == code)))
        finally:
            staged.close()
        self.path.unlink()


# --------------------------------------------------------------------------- building


def _build(cfg: DataConfig, out: Path, log: Callable[[str], None]) -> dict:
    """Read, split and clean every source into ``out/<split>.arrow``; returns the report."""
    report: dict = {"sources": [], "dropped": {s: {} for s in SPLITS}}
    manifests = []
    stages = {s: SplitRows(s, cfg.cleaning, out / f"{s}.staged") for s in SPLITS}
    pool = _Pool(out / "unsplit.staged", cfg.split.seed)
    groups = [(s, s) for s in SPLITS] + [("unsplit", None)]
    for group, split in groups:
        source: SourceConfig
        for i, source in enumerate(getattr(cfg, group)):
            info: dict = {}
            rows = 0
            for table in source_tables(source, cfg.src_lang, cfg.tgt_lang, info, log=log):
                table = strip_table(table)
                rows += len(table)
                (stages[split] if split else pool).add(table)
            info["group"] = f"data.{group}[{i}]"
            if "manifest" in info:
                manifests.append(info.pop("manifest"))
            if split:
                info["rows_per_split"] = {split: rows}
            else:
                pool.sources.append((info, rows))
            report["sources"].append(info)
            log(f"data: {info['group']} {info['source']}: {rows} pairs")
    pool.route(cfg, stages)
    pairs, domains = {}, {}
    for split in SPLITS:
        train = split == "train"
        done = stages[split].finish(out / f"{split}.arrow", dedup=train and cfg.cleaning.dedup,
                                    max_pairs=cfg.max_train_pairs if train else 0)
        dropped = stages[split].dropped
        report["dropped"][split] = dict(sorted(dropped.items()))
        for reason, n in sorted(dropped.items()):
            log(f"data: {split}: dropped {n} pairs ({reason})")
        pairs[split], domains[split] = done["pairs"], done["domains"]
    if pairs["train"] == 0:
        raise DataError("data: no training pairs left after cleaning (see the drops above)")
    overlap = {}
    for split in ("valid", "test"):
        overlap[split] = _shared_sources(out / "train.arrow", out / f"{split}.arrow")
        if overlap[split]:
            log(f"data: {overlap[split]} training pairs share their source sentence with "
                f"{split} (explicitly given splits are left as they are)")
    report["overlap_train_src"] = overlap
    report["pairs"] = pairs
    report["domains"] = {s: dict(sorted(domains[s].items())) for s in SPLITS}
    report["labels"] = sorted(set().union(*domains.values()))
    if manifests:
        report["manifest_data"] = manifests[0] if len(manifests) == 1 else manifests
    return report


def _stream_batches(path: Path):
    with pa.OSFile(str(path)) as fh:
        yield from pa.ipc.open_stream(fh)


def _shared_sources(train: Path, held: Path) -> int:
    """Training pairs whose source sentence is also a source sentence of ``held``."""
    held_src = pa.concat_arrays([b.column(0) for b in _stream_batches(held)]
                                or [pa.array([], pa.string())])
    if not len(held_src):
        return 0
    return sum(int(pc.sum(pc.is_in(b.column(0), value_set=held_src)).as_py() or 0)
               for b in _stream_batches(train))


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
        report = _build_entry(cfg, entry, log)
        corpus = Corpus(splits=_load_splits(entry, report["pairs"]), labels=report["labels"],
                        report=report)
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
    truncated = report.get("truncated")  # added by translate.training.prepare, once tokenized
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
    if report.get("corpus_dir"):
        lines.append(f"plain text: {report['corpus_dir']}/ (manifest.json says what it is)")
    hit = "hit" if report.get("cache_hit") else "miss (built)"
    lines.append(f"cache: {hit} {report.get('cache_path', '')} in {report.get('seconds', 0)} s")
    return "\n".join(lines)
