"""The gettext corpus: the machine's real catalogs, and real .mo files written per test."""

from __future__ import annotations

import gettext
import re
import struct
from collections import Counter
from pathlib import Path

import pytest

from translate.config import SourceConfig
from translate.data import DataError
from translate.data.gettext_corpus import (
    DEFAULT_DOMAIN_MAP,
    build_gettext_corpus,
    labels_for,
    load_domain_map,
    parse_mo,
)
from translate.data.schema import columns

SYSTEM_LOCALE = Path("/usr/share/locale")
GERMAN_CATALOGS = sorted(SYSTEM_LOCALE.glob("de/LC_MESSAGES/*.mo"))
needs_german_catalogs = pytest.mark.skipif(not GERMAN_CATALOGS,
                                           reason="no German gettext catalogs on this host")
UTF8_HEADER = ("Content-Type: text/plain; charset=UTF-8\n"
               "Plural-Forms: nplurals=2; plural=(n != 1);\n")


def write_mo(path: Path, entries: dict[str, str], header: str = UTF8_HEADER,
             encoding: str = "utf-8") -> Path:
    """Write a GNU .mo file (little endian, no hash table) exactly as msgfmt lays it out."""
    items = sorted({"": header, **entries}.items(), key=lambda kv: kv[0].encode(encoding))
    ids = [k.encode(encoding) for k, _ in items]
    strs = [v.encode(encoding) for _, v in items]
    n = len(items)
    orig_off, trans_off = 28, 28 + 8 * n
    data_off = trans_off + 8 * n
    table_o, table_t, blob = [], [], b""
    for b in ids:
        table_o.append((len(b), data_off + len(blob)))
        blob += b + b"\0"
    for b in strs:
        table_t.append((len(b), data_off + len(blob)))
        blob += b + b"\0"
    out = struct.pack("<7I", 0x950412DE, 0, n, orig_off, trans_off, 0, data_off)
    out += b"".join(struct.pack("<2I", *e) for e in table_o)
    out += b"".join(struct.pack("<2I", *e) for e in table_t)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out + blob)
    return path


ENTRIES = {
    "Open file": "Datei öffnen",
    "menu\x04Open": "Öffnen",  # context
    "dialog\x04Open": "Öffnen …",
    "%d file removed\x00%d files removed": "%d Datei entfernt\x00%d Dateien entfernt",
    "Not translated": "",
    "%s: %s": "%s: %s",  # format specifiers only
    "Usage: tool [OPTION]...\n  -h  show help\n": "Aufruf: tool [OPTION] …\n  -h  Hilfe\n",
    "_Save As": "Speichern _unter",  # GTK mnemonic on both sides
    "Set LC_ALL to C": "Setzen Sie LC_ALL auf C",  # identifier, not a mnemonic
}


@pytest.fixture()
def locale(tmp_path: Path) -> Path:
    root = tmp_path / "locale"
    write_mo(root / "de" / "LC_MESSAGES" / "tool.mo", ENTRIES)
    write_mo(root / "de" / "LC_MESSAGES" / "other-tool.mo", {"Open file": "Datei öffnen",
                                                             "Quit": "Beenden"})
    write_mo(root / "fr" / "LC_MESSAGES" / "tool.mo", {"Quit": "Quitter"})
    (tmp_path / "map.tsv").write_text("# test map\ntool\tcli\nother-*\tdesktop,system\n", "utf-8")
    return root


def _source(tmp_path: Path, **kw) -> SourceConfig:
    return SourceConfig(kind="gettext", locale_dirs=[str(tmp_path / "locale")],
                        domain_map=str(tmp_path / "map.tsv"), **kw)


def test_parse_mo_contexts_and_plurals(locale: Path) -> None:
    cat = parse_mo(locale / "de" / "LC_MESSAGES" / "tool.mo")
    assert cat.charset == "UTF-8" and cat.nplurals == 2
    by_id = {(ctx, mid): (pl, forms) for ctx, mid, pl, forms in cat.entries}
    assert by_id[("menu", "Open")] == (None, ["Öffnen"])
    assert by_id[("dialog", "Open")] == (None, ["Öffnen …"])
    assert by_id[(None, "%d file removed")] == ("%d files removed",
                                                ["%d Datei entfernt", "%d Dateien entfernt"])
    assert all(mid for _, mid, _, _ in cat.entries)  # header dropped


def test_build_cleans_and_labels(locale: Path, tmp_path: Path) -> None:
    logs: list[str] = []
    ds, manifest = build_gettext_corpus(_source(tmp_path), "en", "de", log=logs.append)
    rows = {s: (t, d) for s, t, d in zip(*columns(ds, "src", "tgt", "domains"), strict=True)}
    assert rows["Open file"] == ("Datei öffnen", ["cli", "desktop", "system"])  # multilabel
    assert rows["Quit"] == ("Beenden", ["desktop", "system"])
    assert rows["%d file removed"][0] == "%d Datei entfernt"
    assert rows["%d files removed"][0] == "%d Dateien entfernt"
    assert rows["Save As"][0] == "Speichern unter"
    assert rows["Set LC_ALL to C"][0] == "Setzen Sie LC_ALL auf C"
    assert rows["Usage: tool [OPTION]... -h show help"][0] == "Aufruf: tool [OPTION] … -h Hilfe"
    assert "Not translated" not in rows and "%s: %s" not in rows
    # both contexts of "Open" kept as separate pairs
    assert sorted(t for s, t in zip(*columns(ds, "src", "tgt"), strict=True) if s == "Open") \
        == ["Öffnen", "Öffnen …"]
    counts = manifest["counts"]
    assert counts["untranslated"] == 1 and counts["no_text"] == 1
    assert counts["newlines_joined"] == 1 and counts["accelerators_stripped"] == 1
    assert counts["with_context"] == 2 and counts["plural_entries"] == 1
    assert manifest["domains"] == {"cli": 8, "desktop": 2, "system": 2}
    assert manifest["multilabel_pairs"] == 2 and manifest["unmapped_catalogs"] == []


def test_english_target_swaps_and_non_english_pair_fails(locale: Path, tmp_path: Path) -> None:
    ds, _ = build_gettext_corpus(_source(tmp_path), "de", "en")
    src, tgt = columns(ds, "src", "tgt")
    assert ("Beenden", "Quit") in set(zip(src, tgt, strict=True))
    with pytest.raises(DataError, match="must be 'en'"):
        build_gettext_corpus(_source(tmp_path), "de", "fr")


def test_unmapped_catalog_gets_fallback_and_extra_dirs(locale: Path, tmp_path: Path) -> None:
    write_mo(tmp_path / "extra" / "mystery.mo", {"Reticulate splines": "Splines retikulieren"})
    logs: list[str] = []
    ds, manifest = build_gettext_corpus(_source(tmp_path, extra_catalog_dirs=[
        str(tmp_path / "extra")]), "en", "de", log=logs.append)
    rows = dict(zip(*columns(ds, "src", "domains"), strict=True))
    assert rows["Reticulate splines"] == ["other"]
    assert manifest["unmapped_catalogs"] == ["mystery"]
    assert any("mystery" in line for line in logs)


def test_wrong_charset_catalogs_are_skipped_and_reported(locale: Path, tmp_path: Path) -> None:
    lc = locale / "de" / "LC_MESSAGES"
    latin_header = UTF8_HEADER.replace("UTF-8", "ISO-8859-1")
    # declares Latin-1 but holds UTF-8 text
    write_mo(lc / "liar.mo", {"Close": "Schließen"}, header=latin_header)
    # declares UTF-8 but holds Latin-1 bytes
    write_mo(lc / "latin.mo", {"Size": "Größe"}, header=UTF8_HEADER, encoding="latin-1")
    # a correctly declared Latin-1 catalog is fine
    write_mo(lc / "honest.mo", {"Exit": "Schließen"}, header=latin_header, encoding="latin-1")
    (lc / "broken.mo").write_bytes(b"\x00" * 40)
    logs: list[str] = []
    ds, manifest = build_gettext_corpus(_source(tmp_path), "en", "de", log=logs.append)
    skipped = {Path(p).name: why for p, why in manifest["catalogs_skipped"].items()}
    assert set(skipped) == {"liar.mo", "latin.mo", "broken.mo"}
    assert "UTF-8" in skipped["liar.mo"] and "bad magic" in skipped["broken.mo"]
    rows = dict(zip(*columns(ds, "src", "tgt"), strict=True))
    assert rows["Exit"] == "Schließen" and "Close" not in rows and "Size" not in rows
    assert sum("skipping" in line for line in logs) == 3


@pytest.mark.host_dependent
@needs_german_catalogs
def test_unknown_language_lists_languages_with_counts() -> None:
    with pytest.raises(DataError) as err:
        build_gettext_corpus(SourceConfig(kind="gettext"), "en", "xx")
    msg = str(err.value)
    listed = [(lang, int(n)) for lang, n in re.findall(r"([\w@.-]+) \((\d+)\)", msg)]
    assert "'xx'" in msg and listed
    assert [n for _, n in listed] == sorted((n for _, n in listed), reverse=True)
    for lang, n in listed:
        assert n == len(list(SYSTEM_LOCALE.glob(f"{lang}/LC_MESSAGES/*.mo"))), lang


@pytest.mark.host_dependent
def test_domain_map_covers_every_catalog_on_the_machine() -> None:
    rules = load_domain_map(DEFAULT_DOMAIN_MAP)
    stems = {p.stem for p in SYSTEM_LOCALE.glob("*/LC_MESSAGES/*.mo")}
    assert [s for s in sorted(stems) if not labels_for(s, rules)] == []
    assert labels_for("pg_dump-15", rules) == ["databases"]
    assert labels_for("xkeyboard-config", rules) == ["desktop", "geography-languages"]


def test_bad_domain_map_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "map.tsv").write_text("tool\tcli\ntool-without-labels\n", "utf-8")
    with pytest.raises(DataError, match=r"map\.tsv:2"):
        load_domain_map(tmp_path / "map.tsv")


def _plain_messages(path: Path) -> dict[str, str]:
    """Messages of one catalog, read by the standard library, that no cleaning rule touches:
    no context or plural, words of letters only, single spaces. None where the standard
    library cannot read the catalog (a header in a legacy charset)."""
    try:
        with path.open("rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog
    except (OSError, UnicodeDecodeError):
        return {}
    return {k: v for k, v in catalog.items()
            if isinstance(k, str) and _letters_only(k) and _letters_only(v)}


def _letters_only(text: str) -> bool:
    return bool(text) and all(word.isalpha() for word in text.split(" "))


@pytest.mark.host_dependent
@needs_german_catalogs
def test_real_german_catalogs() -> None:
    """Whatever this host's catalogs hold: each one is read or skipped with a reason, the
    messages the standard library reads are there with their catalog's labels, and the
    manifest's counts describe the rows."""
    ds, manifest = build_gettext_corpus(SourceConfig(kind="gettext"), "en", "de",
                                        log=lambda _m: None)
    read, skipped = set(manifest["catalogs"]), manifest["catalogs_skipped"]
    assert read | set(skipped) == {str(p) for p in GERMAN_CATALOGS} and not read & set(skipped)
    assert all(skipped.values())
    src, tgt, doms = columns(ds, "src", "tgt", "domains")
    assert len(ds) == manifest["pairs"] == len(set(zip(src, tgt, strict=True)))
    assert not any("\n" in s or "\n" in t for s, t in zip(src, tgt, strict=True))
    assert all(s.strip() == s and s and t for s, t in zip(src, tgt, strict=True))
    assert manifest["multilabel_pairs"] == sum(len(d) > 1 for d in doms)
    assert manifest["domains"] == dict(sorted(Counter(x for d in doms for x in d).items()))

    rules = load_domain_map(DEFAULT_DOMAIN_MAP)
    rows = {(s, t): set(d) for s, t, d in zip(src, tgt, doms, strict=True)}
    unmapped, checked = set(), 0
    for path in map(Path, sorted(read)):
        labels = labels_for(path.stem, rules)
        if not labels:
            unmapped.add(path.stem)
        for msgid, msgstr in _plain_messages(path).items():
            assert rows[(msgid, msgstr)] >= set(labels or ["other"]), (path, msgid)
            checked += 1
    assert checked > 0
    assert manifest["unmapped_catalogs"] == sorted(unmapped)
