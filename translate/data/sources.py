"""Readers for one corpus source each; every reader returns a ``datasets.Dataset``.

All readers produce the same three columns -- ``src``, ``tgt``, ``domains`` -- so the
corpus builder never needs to know where a pair came from. Errors a user can cause (a
missing file, a short file, bad UTF-8, a missing column, an unreachable hub) become a
one-line :class:`DataError` naming the file / line / column, because a stack trace from
deep inside pyarrow does not tell anyone which of their files is wrong.
"""

from __future__ import annotations

import csv
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import datasets
import numpy as np
import pyarrow as pa

from translate.config import SourceConfig
from translate.data.gettext_corpus import build_gettext_corpus, catalog_inputs
from translate.data.lines import BATCH_ROWS, parallel_lines
from translate.data.schema import FEATURES, DataError, columns, make_dataset

TABULAR_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
                   ".parquet": "parquet", ".pq": "parquet"}


def describe(source: SourceConfig) -> str:
    """A short human-readable name of a source for logs and the report."""
    if source.kind == "text":
        return f"text:{source.prefix}"
    if source.kind == "tabular":
        return f"tabular:{source.path}"
    if source.kind == "hub":
        parts = [source.name or "", source.subset or "", source.split]
        return "hub:" + "/".join(p for p in parts if p)
    return "gettext:" + ",".join(source.locale_dirs + source.extra_catalog_dirs)


def load_source(source: SourceConfig, src_lang: str, tgt_lang: str,
                log: Callable[[str], None] = print) -> tuple[datasets.Dataset, dict]:
    """Read one source into ``{src, tgt, domains}`` rows plus an info dict for the report.

    The source's own ``domains`` are added to every row (union with row labels).
    For ``gettext`` the info dict carries the build ``manifest``.
    """
    info: dict[str, Any] = {"source": describe(source)}
    if source.kind == "text":
        ds = _load_text(source, src_lang, tgt_lang)
    elif source.kind == "tabular":
        ds = _load_tabular(source)
    elif source.kind == "hub":
        ds = _load_hub(source, src_lang, tgt_lang)
    elif source.kind == "gettext":
        ds, manifest = build_gettext_corpus(source, src_lang, tgt_lang, log=log)
        info["manifest"] = manifest
    else:  # pragma: no cover - config validation rejects other kinds
        raise DataError(f"unknown source kind {source.kind!r}")
    if source.max_pairs and len(ds) > source.max_pairs:
        log(f"{describe(source)}: keeping the first {source.max_pairs} of {len(ds)} pairs "
            "(max_pairs)")
        info["limited_from"] = len(ds)
        ds = ds.select(range(source.max_pairs))
    if source.domains:
        extra = sorted(set(source.domains))
        src, tgt, doms = columns(ds, "src", "tgt", "domains")
        ds = make_dataset(src, tgt, [sorted(set(d) | set(extra)) for d in doms])
    info["rows"] = len(ds)
    return ds, info


def input_files(source: SourceConfig, src_lang: str, tgt_lang: str) -> list[Path]:
    """Every local file the source reads: their size/mtime go into the cache key."""
    if source.kind == "text":
        return [Path(f"{source.prefix}.{lang}") for lang in (src_lang, tgt_lang)]
    if source.kind == "tabular":
        return [Path(source.path or "")]
    if source.kind == "hub":
        root = Path(source.name or "")
        if root.is_dir():
            return sorted(p for p in root.rglob("*") if p.is_file())
        return []
    return catalog_inputs(source, src_lang, tgt_lang)


# --------------------------------------------------------------------------- text


def _load_text(source: SourceConfig, src_lang: str, tgt_lang: str) -> datasets.Dataset:
    parts = list(parallel_lines(Path(f"{source.prefix}.{src_lang}"),
                                Path(f"{source.prefix}.{tgt_lang}")))
    n = sum(len(s) for s, _ in parts)
    table = pa.table({"src": pa.chunked_array([s for s, _ in parts], pa.string()),
                      "tgt": pa.chunked_array([t for _, t in parts], pa.string()),
                      "domains": constant_labels([], n)}, schema=FEATURES.arrow_schema)
    return datasets.Dataset(table)


def constant_labels(labels: list[str], n: int) -> pa.ListArray:
    """The same label list for ``n`` rows, built in Arrow."""
    offsets = np.arange(n + 1, dtype=np.int64) * len(labels)
    values = pa.array(labels, pa.string()).take(np.tile(np.arange(len(labels)), n))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def source_tables(source: SourceConfig, src_lang: str, tgt_lang: str, info: dict,
                  log: Callable[[str], None] = print,
                  rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """The rows of one source as tables of at most ``rows`` pairs, as :func:`load_source`
    gives them (``max_pairs``, the source's ``domains``); ``info`` is filled as it gives it,
    once the tables are exhausted.

    Text files are read a block at a time, so that a corpus of millions of lines is never
    whole in memory; the other kinds are read by :func:`load_source` and cut into tables."""
    if source.kind != "text":
        ds, loaded = load_source(source, src_lang, tgt_lang, log=log)
        info.update(loaded)
        table = ds.with_format("arrow")[:]
        for start in range(0, len(table), rows):
            yield table.slice(start, rows)
        return
    info["source"] = describe(source)
    labels, limit, total = sorted(set(source.domains)), source.max_pairs, 0
    for src, tgt in parallel_lines(Path(f"{source.prefix}.{src_lang}"),
                                   Path(f"{source.prefix}.{tgt_lang}"), rows):
        keep = len(src) if not limit else max(0, min(len(src), limit - total))
        total += len(src)
        if keep:  # past max_pairs the files are still read: a bad line or count is an error
            yield pa.table({"src": src.slice(0, keep), "tgt": tgt.slice(0, keep),
                            "domains": constant_labels(labels, keep)})
    if limit and total > limit:
        log(f"{describe(source)}: keeping the first {limit} of {total} pairs (max_pairs)")
        info["limited_from"] = total
    info["rows"] = min(total, limit) if limit else total


# --------------------------------------------------------------------------- tabular


def parse_labels(value: Any) -> list[str]:
    """Turn a cell into a label list.

    Lists (JSONL / Parquet) are taken as they are. Strings (TSV / CSV) may be a JSON list
    (``["it", "legal"]``) or labels separated by ``|`` or ``,`` (``it|legal``); ``|`` wins
    when present so labels may contain commas. Empty cells mean no label.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return sorted({str(v).strip() for v in value if v is not None and str(v).strip()})
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return parse_labels(parsed)
    sep = "|" if "|" in text else ","
    return sorted({part.strip() for part in text.split(sep) if part.strip()})


def _tabular_format(source: SourceConfig, path: Path) -> str:
    if source.format != "auto":
        return source.format
    fmt = TABULAR_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the extension {path.suffix!r}; "
                        f"set format: to one of tsv, csv, jsonl, parquet")
    return fmt


def _load_tabular(source: SourceConfig) -> datasets.Dataset:
    path = Path(source.path or "")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    fmt = _tabular_format(source, path)
    # Every cell is text: no NA guessing ("NA", "null" and "nan" are real words here),
    # and TSV is read without quote handling so a literal '"' in a sentence survives.
    try:
        if fmt in ("tsv", "csv"):
            sep = "\t" if fmt == "tsv" else ","
            quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
            header = _check_fields(path, sep, quoting)
            kwargs: dict[str, Any] = {
                "keep_default_na": False, "na_filter": False, "sep": sep,
                "features": datasets.Features({c: datasets.Value("string") for c in header}),
            }
            if fmt == "tsv":
                kwargs["quoting"] = quoting
            ds = datasets.Dataset.from_csv(str(path), keep_in_memory=True, **kwargs)
        elif fmt == "jsonl":
            ds = datasets.Dataset.from_json(str(path), keep_in_memory=True)
        else:
            ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    except DataError:
        raise
    except Exception as err:  # pyarrow / pandas parse errors
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = _first_bad_json_line(path) if fmt == "jsonl" else ""
        raise DataError(f"{path}: cannot read as {fmt}: {where or msg}") from None
    return _select_columns(ds, str(path), source.src_column, source.tgt_column,
                           source.domains_column)


def _check_fields(path: Path, sep: str, quoting: int) -> list[str]:
    """The header of a TSV/CSV file, after checking that every row has as many fields: a
    row with a missing separator would otherwise become a pair with an empty side (and be
    dropped as one), one with an extra separator a parse error that names no line."""
    bad: list[str] = []

    def lines(fh: BinaryIO) -> Iterator[tuple[int, str]]:  # decoded one by one, numbered
        for n, raw in enumerate(fh, 1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {n}: not UTF-8 ({err.reason})") from None

    with path.open("rb") as fh:
        numbered = lines(fh)
        first = next(numbered, (1, ""))[1]
        header = next(csv.reader([first], delimiter=sep, quoting=quoting), [])
        if quoting == csv.QUOTE_NONE:  # every tab separates: counting them needs no parser
            widths = ((n, text.count(sep) + 1) for n, text in numbered if text.strip())
        else:  # quoted fields may hold separators and line breaks
            reader = csv.reader((text for _, text in numbered), delimiter=sep, quoting=quoting)
            widths = ((reader.line_num + 1, len(row)) for row in reader if row)
        for line, width in widths:
            if width != len(header):
                bad.append(f"line {line} has {width}")
                if len(bad) == 4:
                    break
    if bad:
        more = " (and more)" if len(bad) == 4 else ""
        raise DataError(f"{path}: every row needs the header's {len(header)} fields; "
                        f"{', '.join(bad[:3])}{more}")
    return header


def _first_bad_json_line(path: Path) -> str:
    """``line N: <why>`` for the first line of a JSON-lines file that is not a JSON object
    ("" when every line is one)."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as err:
                return f"line {n}: {err}"
            if not isinstance(record, dict):
                return f"line {n}: a JSON {type(record).__name__}, not an object"
    return ""


def _select_columns(ds: datasets.Dataset, where: str, src_col: str, tgt_col: str,
                    domains_col: str | None) -> datasets.Dataset:
    wanted = [c for c in (src_col, tgt_col, domains_col) if c]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: no column {', '.join(map(repr, missing))}; "
                        f"the columns are {', '.join(map(repr, ds.column_names))}")
    cols = columns(ds, *wanted)
    src = ["" if v is None else str(v) for v in cols[0]]
    tgt = ["" if v is None else str(v) for v in cols[1]]
    if domains_col:
        labels = [parse_labels(v) for v in cols[2]]
    else:
        labels = [[] for _ in src]
    return make_dataset(src, tgt, labels)


# --------------------------------------------------------------------------- hub


def _offline_advice(name: str) -> str:
    return (f"hub dataset {name!r} cannot be reached (no network or HF_HUB_OFFLINE / "
            "HF_DATASETS_OFFLINE set): download it on a machine with internet, "
            "ds.save_to_disk(DIR), copy DIR here and set name: DIR "
            "(or export it to text files and use kind: text)")


def _env_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe so a machine without network fails in seconds, not minutes."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https"
                                                                   else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "state.json").is_file() or \
        (path / "dataset_dict.json").is_file()


def _load_hub(source: SourceConfig, src_lang: str, tgt_lang: str) -> datasets.Dataset:
    name = source.name or ""
    local = Path(name)
    where = f"hub:{name}"
    if local.is_dir() and _is_saved_dataset(local):
        try:
            loaded = datasets.load_from_disk(str(local), keep_in_memory=True)
        except Exception as err:
            raise DataError(f"{local}: cannot load the saved dataset: {err}") from None
        if isinstance(loaded, datasets.DatasetDict):
            if source.split not in loaded:
                raise DataError(f"{local}: no split {source.split!r}; it has "
                                f"{', '.join(loaded)}")
            loaded = loaded[source.split]
        ds = loaded
    else:
        if not local.is_dir():
            if _looks_like_path(name):  # never a hub id: hub ids are "name" or "owner/name"
                raise DataError(f"{where}: no such folder {local} (a dataset saved with "
                                "save_to_disk, or a local dataset folder)")
            if _env_offline() or not hub_reachable():
                raise DataError(_offline_advice(name))
        try:
            ds = datasets.load_dataset(name, source.subset, split=source.split)
        except Exception as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else ""
            if not local.is_dir() and ("offline" in text.lower() or "connect" in text.lower()
                                       or "couldn't find" in text.lower()):
                raise DataError(_offline_advice(name)) from None
            raise DataError(f"{where}: cannot load split {source.split!r}: "
                            f"{type(err).__name__}: {text}") from None
    return _from_hub_layout(ds, where, source, src_lang, tgt_lang)


def _from_hub_layout(ds: datasets.Dataset, where: str, source: SourceConfig, src_lang: str,
                     tgt_lang: str) -> datasets.Dataset:
    """Accept ``{"translation": {lang: text}}`` or flat columns.

    Flat columns default to ``src``/``tgt``; when those are absent but columns named after
    the languages exist (``de``/``en``), those are used.
    """
    cols = ds.column_names
    if "translation" in cols and source.src_column not in cols:
        (pairs,) = columns(ds, "translation")
        if pairs and not all(src_lang in p and tgt_lang in p for p in pairs[:1]):
            raise DataError(f"{where}: the translation column has languages "
                            f"{sorted(pairs[0])}, not {src_lang!r} and {tgt_lang!r}")
        src = [p.get(src_lang) or "" for p in pairs]
        tgt = [p.get(tgt_lang) or "" for p in pairs]
        labels = ([parse_labels(v) for v in columns(ds, source.domains_column)[0]]
                  if source.domains_column and source.domains_column in cols
                  else [[] for _ in src])
        if source.domains_column and source.domains_column not in cols:
            raise DataError(f"{where}: no column {source.domains_column!r}; the columns are "
                            f"{', '.join(map(repr, cols))}")
        return make_dataset(src, tgt, labels)
    src_col, tgt_col = source.src_column, source.tgt_column
    if src_col not in cols and tgt_col not in cols and src_lang in cols and tgt_lang in cols:
        src_col, tgt_col = src_lang, tgt_lang
    return _select_columns(ds, where, src_col, tgt_col, source.domains_column)
