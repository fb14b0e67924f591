"""Source readers on the real corpora and on real malformed files written per test."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from translate.config import SourceConfig
from translate.data import DataError, load_source
from translate.data.schema import columns
from translate.data.sources import parse_labels


def _lines(path: Path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:n]


def test_multi30k_text_counts_and_source_labels(multi30k: Path) -> None:
    sizes = {"train": 29000, "val": 1014, "test_2016_flickr": 1000}
    for name, n in sizes.items():
        ds, info = load_source(SourceConfig(kind="text", prefix=str(multi30k / name),
                                            domains=["captions"]), "de", "en")
        assert len(ds) == n and info["rows"] == n
    src, tgt, doms = columns(ds, "src", "tgt", "domains")
    assert src[0] == _lines(multi30k / "test_2016_flickr.de", 1)[0]
    assert tgt[0] == _lines(multi30k / "test_2016_flickr.en", 1)[0]
    assert all(d == ["captions"] for d in doms)
    # French and Czech sides line up too.
    ds, _ = load_source(SourceConfig(kind="text", prefix=str(multi30k / "val")), "fr", "cs")
    assert len(ds) == 1014 and columns(ds, "domains")[0][0] == []


def test_mismatched_line_counts_name_both_files(multi30k: Path, tmp_path: Path) -> None:
    (tmp_path / "c.de").write_text("\n".join(_lines(multi30k / "val.de", 10)) + "\n", "utf-8")
    (tmp_path / "c.en").write_text("\n".join(_lines(multi30k / "val.en", 9)) + "\n", "utf-8")
    with pytest.raises(DataError) as err:
        load_source(SourceConfig(kind="text", prefix=str(tmp_path / "c")), "de", "en")
    msg = str(err.value)
    assert "c.de" in msg and "c.en" in msg and "10" in msg and "9" in msg


def test_invalid_utf8_names_file_and_line(multi30k: Path, tmp_path: Path) -> None:
    lines = [x.encode() for x in _lines(multi30k / "val.de", 5)]
    lines[3] = lines[3][:4] + b"\xff\xfe" + lines[3][4:]
    (tmp_path / "c.de").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "c.en").write_text("\n".join(_lines(multi30k / "val.en", 5)) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"c\.de:4: invalid UTF-8"):
        load_source(SourceConfig(kind="text", prefix=str(tmp_path / "c")), "de", "en")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.de: file not found"):
        load_source(SourceConfig(kind="text", prefix=str(tmp_path / "nope")), "de", "en")


def test_text_keeps_unicode_line_separators(tmp_path: Path) -> None:
    # U+2028 inside a segment must not split it (str.splitlines would misalign the sides).
    (tmp_path / "c.de").write_text("eins\u2028zwei\ndrei\r\n", "utf-8")
    (tmp_path / "c.en").write_text("one two\nthree\n", "utf-8")
    ds, _ = load_source(SourceConfig(kind="text", prefix=str(tmp_path / "c")), "de", "en")
    assert columns(ds, "src")[0] == ["eins\u2028zwei", "drei"]


@pytest.fixture()
def real_rows(multi30k: Path) -> list[dict]:
    de, en = _lines(multi30k / "val.de", 200), _lines(multi30k / "val.en", 200)
    rows = [{"de": d, "en": e, "labels": ["captions", "it"] if i % 3 == 0 else ["captions"]}
            for i, (d, e) in enumerate(zip(de, en, strict=True))]
    rows.append({"de": "NA", "en": "null", "labels": []})  # must stay text, not missing values
    rows.append({"de": 'Ein "Zitat" hier', "en": 'A "quote" here', "labels": []})
    return rows


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "parquet"])
def test_tabular_formats(real_rows: list[dict], tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "tsv":
        path.write_text("de\ten\tlabels\n" + "".join(
            f"{r['de']}\t{r['en']}\t{'|'.join(r['labels'])}\n" for r in real_rows), "utf-8")
    elif fmt == "csv":
        flat = [{**r, "labels": json.dumps(r["labels"])} for r in real_rows]
        datasets.Dataset.from_list(flat).to_csv(str(path), index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in real_rows),
                        "utf-8")
    else:
        datasets.Dataset.from_list(real_rows).to_parquet(str(path))
    source = SourceConfig(kind="tabular", path=str(path), src_column="de", tgt_column="en",
                          domains_column="labels", domains=["extra"])
    ds, _ = load_source(source, "de", "en")
    src, tgt, doms = columns(ds, "src", "tgt", "domains")
    assert len(ds) == len(real_rows)
    assert src[:200] == [r["de"] for r in real_rows[:200]]
    assert tgt[:200] == [r["en"] for r in real_rows[:200]]
    assert doms[0] == ["captions", "extra", "it"] and doms[1] == ["captions", "extra"]
    assert (src[200], tgt[200], doms[200]) == ("NA", "null", ["extra"])
    assert (src[201], tgt[201]) == ('Ein "Zitat" hier', 'A "quote" here')


def test_tabular_missing_column_lists_columns(real_rows: list[dict], tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in real_rows), "utf-8")
    with pytest.raises(DataError) as err:
        load_source(SourceConfig(kind="tabular", path=str(path)), "de", "en")
    msg = str(err.value)
    assert "pairs.jsonl" in msg and "'src'" in msg and "'de', 'en', 'labels'" in msg


def test_tabular_bad_rows_name_their_lines(real_rows: list[dict], tmp_path: Path) -> None:
    good = [f"{r['de']}\t{r['en']}\n" for r in real_rows[:5]]
    cases = {  # file name: (content, the error after "<path>: ")
        "short.tsv": ("de\ten\n" + "".join(good[:2]) + "ein Satz ohne Tab\n" + good[2]
                      + "zu\tviele\tFelder\n",
                      "every row needs the header's 2 fields; line 4 has 1, line 6 has 3"),
        "short.csv": ('de,en\n"Hallo, Welt","Hello,\nworld"\nnur eine Spalte\n',
                      "every row needs the header's 2 fields; line 4 has 1"),
        "latin1.tsv": (b"de\ten\n" + "".join(good).encode() + "Übung\tpractice\n".encode(
            "latin-1"), "line 7: not UTF-8 (invalid continuation byte)"),
        "broken.jsonl": ("".join(json.dumps(r) + "\n" for r in real_rows[:3]) + '{"de": "x"\n',
                         "cannot read as jsonl: line 4: Expecting ',' delimiter: line 2 column "
                         "1 (char 11)"),
        "list.jsonl": (json.dumps(real_rows[0]) + "\n[1, 2]\n",
                       "cannot read as jsonl: line 2: a JSON list, not an object"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, "utf-8")
        source = SourceConfig(kind="tabular", path=str(path), src_column="de", tgt_column="en")
        with pytest.raises(DataError) as err:
            load_source(source, "de", "en")
        assert str(err.value) == f"{path}: {expected}"
    # quoted CSV fields may hold the separator and line breaks: still one row each
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('de,en\n"Hallo, Welt","Hello,\nworld"\nein,one\n', "utf-8")
    ds, _ = load_source(SourceConfig(kind="tabular", path=str(quoted), src_column="de",
                                     tgt_column="en"), "de", "en")
    assert columns(ds, "src", "tgt") == [["Hallo, Welt", "ein"], ["Hello,\nworld", "one"]]


def test_tabular_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "pairs.xlsx").write_text("x", "utf-8")
    with pytest.raises(DataError, match="format"):
        load_source(SourceConfig(kind="tabular", path=str(tmp_path / "pairs.xlsx")), "de", "en")


def test_parse_labels_choices() -> None:
    assert parse_labels('["b", "a"]') == ["a", "b"]
    assert parse_labels("it|legal, eu") == ["it", "legal, eu"]
    assert parse_labels("it, legal") == ["it", "legal"]
    assert parse_labels("") == [] and parse_labels(None) == []
    assert parse_labels(["x", "", "x"]) == ["x"]


def test_hub_saved_dataset_translation_layout(real_rows: list[dict], tmp_path: Path) -> None:
    rows = [{"translation": {"de": r["de"], "en": r["en"]}} for r in real_rows[:200]]
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:150]),
                          "validation": datasets.Dataset.from_list(rows[150:])}
                         ).save_to_disk(str(saved))
    ds, _ = load_source(SourceConfig(kind="hub", name=str(saved), split="validation",
                                     domains=["captions"]), "de", "en")
    src, tgt, doms = columns(ds, "src", "tgt", "domains")
    assert len(ds) == 50 and src[0] == real_rows[150]["de"] and tgt[0] == real_rows[150]["en"]
    assert doms[0] == ["captions"]
    # English -> German reads the same layout the other way round.
    ds, _ = load_source(SourceConfig(kind="hub", name=str(saved), split="train"), "en", "de")
    assert columns(ds, "src")[0][0] == real_rows[0]["en"]
    with pytest.raises(DataError, match="no split 'test'"):
        load_source(SourceConfig(kind="hub", name=str(saved), split="test"), "de", "en")


def test_hub_single_saved_dataset_and_local_folder(real_rows: list[dict], tmp_path: Path
                                                   ) -> None:
    flat = datasets.Dataset.from_list([{"de": r["de"], "en": r["en"]} for r in real_rows])
    flat.save_to_disk(str(tmp_path / "flat"))
    ds, _ = load_source(SourceConfig(kind="hub", name=str(tmp_path / "flat")), "de", "en")
    assert columns(ds, "src")[0] == [r["de"] for r in real_rows]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(json.dumps({"src": r["de"], "tgt": r["en"]}) + "\n" for r in real_rows), "utf-8")
    ds, _ = load_source(SourceConfig(kind="hub", name=str(folder), split="train"), "de", "en")
    assert columns(ds, "tgt")[0] == [r["en"] for r in real_rows]


def test_hub_name_that_is_a_missing_folder_says_so(tmp_path: Path) -> None:
    for name in (str(tmp_path / "saved"), "./exports/wmt/de-en"):
        with pytest.raises(DataError) as err:
            load_source(SourceConfig(kind="hub", name=name), "de", "en")
        assert str(err.value) == (f"hub:{name}: no such folder {Path(name)} (a dataset saved "
                                  "with save_to_disk, or a local dataset folder)")


def test_hub_offline_fails_with_advice() -> None:
    with pytest.raises(DataError) as err:
        load_source(SourceConfig(kind="hub", name="wmt/wmt14", subset="de-en"), "de", "en")
    msg = str(err.value)
    assert "\n" not in msg and "save_to_disk" in msg and "kind: text" in msg


def test_hub_without_offline_flag_fails_on_unreachable_network(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on discard
    with pytest.raises(DataError, match="cannot be reached"):
        load_source(SourceConfig(kind="hub", name="wmt/wmt14", subset="de-en"), "de", "en")
