"""The Arrow read + clean path against a plain reference of the rules, on real data.

The reference below reads whole files into Python lists and applies the rules of
``translate.data.corpus`` one pair at a time, as simply as they can be written; the
prepared corpus must equal it row for row (text, order, labels) and in every report count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from translate import config
from translate.config import CleaningConfig, DataConfig, SourceConfig, SplitConfig
from translate.data import DataError, load_corpus, load_source
from translate.data.cleaning import SCHEMA, Staged, pair_groups, strip
from translate.data.lines import line_arrays, parallel_lines
from translate.data.schema import columns

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------- the reference


def ref_lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def ref_source(source: SourceConfig, cfg: DataConfig) -> list[tuple[str, str, list[str]]]:
    if source.kind == "text":
        src = ref_lines(Path(f"{source.prefix}.{cfg.src_lang}"))
        tgt = ref_lines(Path(f"{source.prefix}.{cfg.tgt_lang}"))
        doms: list[list[str]] = [[] for _ in src]
    else:  # the gettext reader itself is not what is compared here
        plain = dataclasses.replace(source, max_pairs=0, domains=[])
        src, tgt, doms = columns(load_source(plain, cfg.src_lang, cfg.tgt_lang,
                                             log=lambda m: None)[0], "src", "tgt", "domains")
    rows = list(zip(src, tgt, doms, strict=True))
    if source.max_pairs:
        rows = rows[:source.max_pairs]
    if source.domains:
        rows = [(s, t, sorted(set(d) | set(source.domains))) for s, t, d in rows]
    return [(s.strip(), t.strip(), d) for s, t, d in rows]


def ref_hash_split(src: list[str], sp: SplitConfig) -> list[str]:
    unit = {s: struct.unpack(">Q", hashlib.sha1(f"{sp.seed}\x00{s}".encode()).digest()[:8])[0]
            / 2**64 for s in set(src)}
    where = {s: "valid" if u < sp.valid_fraction else
             "test" if u < sp.valid_fraction + sp.test_fraction else "train"
             for s, u in unit.items()}
    count = Counter(src)
    for split, cap in (("valid", sp.max_valid), ("test", sp.max_test)):
        taken = 0
        for s in sorted((s for s in unit if where[s] == split), key=lambda s: (unit[s], s)):
            if taken + count[s] > cap:
                where[s] = "train"
            else:
                taken += count[s]
    return [where[s] for s in src]


def reference(cfg: DataConfig) -> dict:
    rows = {s: [] for s in SPLITS}
    per_source = []
    for split in SPLITS:
        for source in getattr(cfg, split):
            mine = ref_source(source, cfg)
            rows[split] += mine
            per_source.append({split: len(mine)})
    pool = [ref_source(source, cfg) for source in cfg.unsplit]
    targets = ref_hash_split([s for part in pool for s, _, _ in part], cfg.split)
    for part in pool:
        mine, targets = targets[:len(part)], targets[len(part):]
        per_source.append(dict(Counter(mine)))
        for row, where in zip(part, mine, strict=True):
            rows[where].append(row)
    c, out, dropped = cfg.cleaning, {}, {}
    for split in SPLITS:
        union: dict = {}
        if any(d for _, _, d in rows[split]):
            for s, t, d in rows[split]:
                union.setdefault((s, t), set()).update(d)
        kept, seen, drops = [], set(), Counter()
        for s, t, _ in rows[split]:
            short, longer = sorted((len(s), len(t)))
            reason = ("empty_side" if not s or not t else None if split != "train" else
                      "too_long" if longer > c.max_chars else
                      "length_ratio" if short >= c.min_chars_for_ratio
                      and longer / short > c.max_ratio else
                      "duplicate" if c.dedup and (s, t) in seen else
                      "max_train_pairs" if cfg.max_train_pairs
                      and len(kept) >= cfg.max_train_pairs else None)
            if reason in (None, "max_train_pairs"):
                seen.add((s, t))
            if reason:
                drops[reason] += 1
            else:
                kept.append((s, t, sorted(union[(s, t)]) if union else []))
        out[split], dropped[split] = kept, dict(sorted(drops.items()))
    held = {split: {s for s, _, _ in out[split]} for split in ("valid", "test")}
    return {"rows": out, "dropped": dropped, "rows_per_split": per_source,
            "overlap": {k: sum(s in v for s, _, _ in out["train"]) for k, v in held.items()},
            "domains": {k: dict(sorted(Counter(x for _, _, d in v for x in d).items()))
                        for k, v in out.items()}}


def assert_same_as_reference(cfg: DataConfig) -> dict:
    corpus = load_corpus(cfg, log=lambda m: None)
    want, rep = reference(cfg), corpus.report
    for split in SPLITS:
        got = list(zip(*columns(corpus.splits[split], "src", "tgt", "domains"), strict=True))
        assert got == [tuple(r) for r in want["rows"][split]], split
    assert rep["dropped"] == want["dropped"]
    assert rep["pairs"] == {s: len(v) for s, v in want["rows"].items()}
    assert rep["domains"] == want["domains"]
    assert rep["overlap_train_src"] == want["overlap"]
    # the split order of rows_per_split too: it is printed as it is
    assert [list(i["rows_per_split"].items()) for i in rep["sources"]] == [
        list(d.items()) for d in want["rows_per_split"]]
    return rep


# --------------------------------------------------------------------------- real data


def _write(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> None:
    path.write_bytes((("\ufeff" if bom else "") + newline.join(lines) + newline).encode())


def _lines(path: Path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:n]


def _text(prefix: Path, *domains: str, max_pairs: int = 0) -> SourceConfig:
    return SourceConfig(kind="text", prefix=str(prefix), domains=list(domains),
                        max_pairs=max_pairs)


@pytest.fixture(scope="module")
def dirty(multi30k: Path, multidomain: Path, tmp_path_factory) -> Path:
    """Real pairs with the faults cleaning exists for injected: empty sides, padding
    (ASCII and Unicode spaces), CRLF, a byte-order mark, over-long and lopsided lines,
    exact and padded duplicates, pairs repeated across labelled sources."""
    out = tmp_path_factory.mktemp("dirty")
    rng = np.random.default_rng(5)
    de = _lines(multi30k / "val.de", 400) + _lines(multidomain / "general" / "train.de", 400)
    en = _lines(multi30k / "val.en", 400) + _lines(multidomain / "general" / "train.en", 400)
    for i in rng.choice(len(de), 60, replace=False).tolist():
        j = int(rng.integers(len(de)))
        kind = i % 6
        if kind == 0:
            de[i], en[i] = de[j], en[j]  # an exact duplicate
        elif kind == 1:
            de[i], en[i] = f" \u3000{de[j]}\xa0", f"\t{en[j]} "  # a padded one
        elif kind == 2:
            de[i] = " " if i % 2 else ""
        elif kind == 3:
            de[i] = (de[j] + " ") * 12  # too long
        elif kind == 4:
            en[i] = en[j] + " " + en[j] + " " + en[j] + " " + en[j]  # lopsided
        else:
            de[i] = de[i] + "\u2028" + de[j]  # a separator that is not a line break
    _write(out / "a.de", de[:500], "\r\n", bom=True)
    _write(out / "a.en", en[:500], "\r\n")
    _write(out / "b.de", de[300:])
    _write(out / "b.en", en[300:])
    _write(out / "u.de", de[100:700])
    _write(out / "u.en", en[100:700])
    _write(out / "v.de", de[::7])
    _write(out / "v.en", en[::7])
    return out


@pytest.mark.parametrize("dedup,max_train_pairs", [(True, 400), (False, 0)])
def test_matches_reference_on_dirty_real_data(dirty: Path, multi30k: Path, tmp_path: Path,
                                              dedup: bool, max_train_pairs: int) -> None:
    cfg = DataConfig(
        src_lang="de", tgt_lang="en", cache_dir=str(tmp_path), max_train_pairs=max_train_pairs,
        cleaning=CleaningConfig(max_chars=300, max_ratio=2.5, min_chars_for_ratio=8,
                                dedup=dedup),
        split=SplitConfig(valid_fraction=0.2, test_fraction=0.1, max_valid=60, max_test=1000),
        train=[_text(dirty / "a", "captions"), _text(dirty / "b", "general", "mixed"),
               _text(dirty / "a", max_pairs=350)],
        valid=[_text(dirty / "v", "held")], test=[_text(multi30k / "test_2016_flickr")],
        unsplit=[_text(dirty / "u", "pool"), _text(dirty / "b", max_pairs=200)])
    rep = assert_same_as_reference(cfg)
    # the faults were there to be found
    assert rep["dropped"]["train"]["empty_side"] and rep["dropped"]["train"]["too_long"]
    assert rep["dropped"]["train"]["length_ratio"] and rep["dropped"]["valid"]["empty_side"]
    assert ("duplicate" in rep["dropped"]["train"]) == dedup
    assert ("max_train_pairs" in rep["dropped"]["train"]) == bool(max_train_pairs)
    assert rep["overlap_train_src"]["valid"] > 0
    assert len(rep["sources"][-1]["rows_per_split"]) == 3


def test_matches_reference_on_multidomain_config(shared_data: Path, tmp_path: Path) -> None:
    cfg = config.load(ROOT / "configs" / "multidomain.yaml",
                      [f"data.cache_dir={tmp_path}"]).data
    for group in SPLITS:
        for source in getattr(cfg, group):
            source.prefix = str(shared_data / source.prefix.split("shared/data/")[1])
    rep = assert_same_as_reference(cfg)
    assert rep["pairs"]["train"] > 130_000 and len(rep["labels"]) == 9
    # pairs found in several folders carry several labels
    assert sum(rep["domains"]["train"].values()) > rep["pairs"]["train"]


@pytest.mark.host_dependent  # reads this machine's gettext catalogs
def test_matches_reference_on_default_gettext_corpus(tmp_path: Path) -> None:
    cfg = config.load(ROOT / "configs" / "default.yaml", [f"data.cache_dir={tmp_path}"]).data
    rep = assert_same_as_reference(cfg)
    assert rep["pairs"]["valid"] == 1000 and Path(rep["manifest"]).is_file()


# --------------------------------------------------------------------------- the parts


def test_lines_follow_the_whole_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    cases = [b"", b"\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n", b"a\r\r\nb", b"a\n\nb\r",
             "x\u2028y\x0cz\x1c\n\u0085w".encode(), b"\r", "é\nü\r\n".encode() * 5]
    for data in cases:
        path.write_bytes(data)
        want = ref_lines(path)
        for block in (1, 2, 3, 1 << 20):
            assert [x for a in line_arrays(path, block) for x in a.to_pylist()] == want
    path.write_bytes("ok\nstill ok é\nbad \xff here\n".encode("latin-1").replace(
        "é".encode("latin-1"), "é".encode()))
    with pytest.raises(DataError, match=r"x.txt:3: invalid UTF-8 \(invalid start byte at "
                                        r"byte 4 of the line\)"):
        list(line_arrays(path, 4))
    for bad in (b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82\n"):
        path.write_bytes(b"a\n" + bad)
        with pytest.raises(DataError, match="x.txt:2: invalid UTF-8"):
            list(line_arrays(path))


def test_parallel_lines_errors(tmp_path: Path) -> None:
    _write(tmp_path / "s", [str(i) for i in range(10)])
    _write(tmp_path / "t", [str(i) for i in range(12)])
    with pytest.raises(DataError, match=r"s has 10 lines but .*t has 12"):
        list(parallel_lines(tmp_path / "s", tmp_path / "t", rows=3))
    (tmp_path / "s").write_bytes(b"a\n" * 7 + b"\xff\n")
    (tmp_path / "t").write_bytes(b"\xff\n")
    # both files are bad: the source file's problem is the one reported
    with pytest.raises(DataError, match=r"s:8: invalid UTF-8"):
        list(parallel_lines(tmp_path / "s", tmp_path / "t", rows=2))


def test_strip_is_str_strip() -> None:
    spaces = [chr(c) for c in range(0x3100) if chr(c).isspace()]
    near = ["\u200b", "\ufeff", "\u180e", "\u2060", "a", "\x00"]
    words = [f"{a}{b}x{a} y{b}" for a in spaces + near for b in spaces + near]
    assert strip(pa.array(words)).to_pylist() == [w.strip() for w in words]


def test_pair_groups_survive_hash_collisions(multi30k: Path, tmp_path: Path) -> None:
    de = _lines(multi30k / "val.de", 300)
    en = _lines(multi30k / "val.en", 300)
    rows = [(de[i % 200], en[i % 200]) for i in range(300)]  # the last 100 repeat
    path = tmp_path / "staged"
    with pa.ipc.new_file(str(path), SCHEMA) as writer:
        for a in range(0, 300, 64):
            part = rows[a:a + 64]
            writer.write_table(pa.table({"src": [s for s, _ in part], "tgt": [t for _, t in part],
                                         "domains": [[] for _ in part]}, schema=SCHEMA))
    staged = Staged(path)
    weak = [lambda s, t: np.zeros(len(s), np.uint64),  # every pair collides
            lambda s, t: (np.array([len(x) for x in s.to_pylist()]) % 5).astype(np.uint64)]
    exact = {}
    want = [exact.setdefault(r, len(exact)) for r in rows]
    for hash_fn in [*weak, None]:
        groups, first = pair_groups(staged, hash_fn) if hash_fn else pair_groups(staged)
        # the same partition of the rows as grouping by the text itself, first rows first
        assert len(set(zip(groups.tolist(), want, strict=True))) == len(exact) == 200
        assert np.flatnonzero(first).tolist() == list(range(200))
    staged.close()
