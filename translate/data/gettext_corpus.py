"""The offline default corpus: human translations of software messages from ``.mo`` files.

Every Debian system carries gettext catalogs (``/usr/share/locale/<lang>/LC_MESSAGES``)
written by human translators, so English -> <lang> training data exists even without
network. This module reads the binary catalogs itself (``gettext.GNUTranslations`` hides
message contexts and plural forms), cleans the strings for one-segment-per-line training and
labels each pair with the domains of the catalogs it came from
(``translate/data/gettext_domains.tsv``, package data).

Cleaning decisions (all counted in the manifest):
  * the header entry (empty msgid) and untranslated entries are dropped;
  * messages with no letters once format specifiers are removed (``"%s: %s"``) are dropped;
  * whitespace runs (including the newlines of multi-line help texts) become one space, so
    a message is one line; messages that contained a newline are counted;
  * keyboard accelerators (``_File`` / ``&File``) are removed from *both* sides when both
    sides have exactly one marker and the marked token is not copied verbatim into the
    translation (that would be an identifier such as ``LC_ALL`` or ``ai_flags``);
  * contexts (``msgctxt``) are dropped from the pair (the context is not part of the text);
  * plurals give two pairs: singular -> msgstr[0], plural -> msgstr[1] (msgstr[0] when the
    language has one form only).
Fuzzy translations are not compiled into ``.mo`` files by msgfmt, so none are visible here.
"""

from __future__ import annotations

import codecs
import fnmatch
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets

from translate.config import SourceConfig
from translate.data.schema import DataError, make_dataset

FALLBACK_LABEL = "other"
# Package data, so that a plain (non-editable) install finds it too.
DEFAULT_DOMAIN_MAP = Path(str(resources.files("translate.data") / "gettext_domains.tsv"))

_FORMAT_SPEC = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t|I)?"
    r"[diouxXeEfFgGaAcspnm%]"
    r"|%\([^)]*\)[-+ #0]*\d*(?:\.\d+)?[a-zA-Z]"  # python %(name)s
    r"|\$\{[^}]*\}|\{[^{}]*\}"  # ${VAR}, {name}
    r"|%<\w+>"  # PRId64-style placeholders
)
_WS = re.compile(r"\s+")


@dataclass
class MoCatalog:
    """Decoded entries of one ``.mo`` file."""

    path: Path
    charset: str
    nplurals: int
    # (context or None, msgid, msgid_plural or None, [msgstr forms])
    entries: list[tuple[str | None, str, str | None, list[str]]] = field(default_factory=list)


def _header_field(header: str, key: str) -> str | None:
    for line in header.split("\n"):
        if line.lower().startswith(key.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def parse_mo(path: Path) -> MoCatalog:
    """Parse a GNU ``.mo`` file; raise :class:`DataError` for a corrupt file or a charset
    that does not decode it (the caller reports and skips such catalogs)."""
    data = path.read_bytes()
    if len(data) < 28:
        raise DataError(f"{path}: too short for a .mo file")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        order = "<"
    elif magic == 0xDE120495:
        order = ">"
    else:
        raise DataError(f"{path}: not a .mo file (bad magic number)")
    _rev, count, orig_off, trans_off = struct.unpack(order + "4I", data[4:20])
    raw: list[tuple[bytes, bytes]] = []
    try:
        for i in range(count):
            olen, ooff = struct.unpack_from(order + "2I", data, orig_off + 8 * i)
            tlen, toff = struct.unpack_from(order + "2I", data, trans_off + 8 * i)
            if ooff + olen > len(data) or toff + tlen > len(data):
                raise struct.error("string beyond end of file")
            raw.append((data[ooff:ooff + olen], data[toff:toff + tlen]))
    except struct.error as err:
        raise DataError(f"{path}: corrupt .mo file ({err})") from None
    header = next((t for o, t in raw if o == b""), b"").decode("ascii", "replace")
    content_type = _header_field(header, "Content-Type") or ""
    match = re.search(r"charset=\s*([\w.:-]+)", content_type)
    charset = match.group(1) if match else "ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        raise DataError(f"{path}: unknown charset {charset!r} in the header") from None
    plural_forms = _header_field(header, "Plural-Forms") or ""
    match = re.search(r"nplurals\s*=\s*(\d+)", plural_forms)
    nplurals = int(match.group(1)) if match else 2
    if codecs.lookup(charset).name != "utf-8":
        # A catalog that is valid, non-ASCII UTF-8 but declares e.g. ISO-8859-1 is almost
        # surely mislabelled; decoding it as declared would train on mojibake.
        blob = b"".join(t for _, t in raw)
        if not blob.isascii():
            try:
                blob.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                raise DataError(f"{path}: declares charset {charset!r} but its text is UTF-8")
    cat = MoCatalog(path=path, charset=charset, nplurals=nplurals)
    for o, t in raw:
        if o == b"":
            continue
        try:
            msgid, msgstr = o.decode(charset), t.decode(charset)
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: text does not decode as the declared charset "
                            f"{charset!r} ({err.reason})") from None
        ctx = None
        if "\x04" in msgid:
            ctx, msgid = msgid.split("\x04", 1)
        singular, _, plural = msgid.partition("\x00")
        cat.entries.append((ctx, singular, plural or None, msgstr.split("\x00")))
    return cat


# --------------------------------------------------------------------------- cleaning


def _has_text(s: str) -> bool:
    if "%" in s or "{" in s:
        s = _FORMAT_SPEC.sub("", s)
    return any(c.isalpha() for c in s)


_MARKS = {m: re.compile(re.escape(m) + r"(?=[^\W_])") for m in ("_", "&")}


def _strip_accelerator(src: str, tgt: str) -> tuple[str, str, bool]:
    for mark, pattern in _MARKS.items():
        if mark not in src:
            continue
        s_hits, t_hits = pattern.findall(src), pattern.findall(tgt)
        if src.count(mark) != 1 or tgt.count(mark) != 1 or len(s_hits) != 1 or len(t_hits) != 1:
            continue
        if mark == "&" and (re.search(r"&\w+;", src) or re.search(r"&\w+;", tgt)):
            continue
        token = next(tok for tok in src.split() if mark in tok)
        if token in tgt:  # identifier copied into the translation, not a mnemonic
            continue
        return src.replace(mark, "", 1), tgt.replace(mark, "", 1), True
    return src, tgt, False


def clean_message(msgid: str, msgstr: str, counts: Counter) -> tuple[str, str] | None:
    """One (English, translation) pair made fit for training, or None (reason counted)."""
    if not msgstr.strip():
        counts["untranslated"] += 1
        return None
    if "\n" in msgid or "\n" in msgstr:
        counts["newlines_joined"] += 1
    src, tgt = _WS.sub(" ", msgid).strip(), _WS.sub(" ", msgstr).strip()
    if not _has_text(src) or not _has_text(tgt):
        counts["no_text"] += 1
        return None
    src, tgt, stripped = _strip_accelerator(src, tgt)
    if stripped:
        counts["accelerators_stripped"] += 1
    return src, tgt


# --------------------------------------------------------------------------- catalogs


def load_domain_map(path: Path) -> list[tuple[str, list[str]]]:
    """``catalog<TAB>label,label`` lines (``#`` comments); catalog may be a glob pattern."""
    if not path.is_file():
        raise DataError(f"{path}: gettext domain map not found (data.*.domain_map)")
    rules = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip():
            raise DataError(f"{path}:{n}: expected 'catalog<TAB>label[,label...]'")
        labels = sorted({x.strip() for x in parts[1].split(",") if x.strip()})
        rules.append((parts[0].strip(), labels))
    return rules


def labels_for(catalog: str, rules: list[tuple[str, list[str]]]) -> list[str]:
    found: set[str] = set()
    for pattern, labels in rules:
        if pattern == catalog or fnmatch.fnmatchcase(catalog, pattern):
            found.update(labels)
    return sorted(found)


def target_language(src_lang: str, tgt_lang: str) -> tuple[str, bool]:
    """(the non-English language, whether English is the source side)."""
    if src_lang == "en" and tgt_lang != "en":
        return tgt_lang, True
    if tgt_lang == "en" and src_lang != "en":
        return src_lang, False
    raise DataError(f"gettext corpus: one of data.src_lang / data.tgt_lang must be 'en' "
                    f"(gettext catalogs translate English messages), got {src_lang!r} -> "
                    f"{tgt_lang!r}")


def available_languages(locale_dirs: list[str]) -> Counter:
    counts: Counter = Counter()
    for root in locale_dirs:
        for d in Path(root).glob("*/LC_MESSAGES"):
            n = sum(1 for _ in d.glob("*.mo"))
            if n:
                counts[d.parent.name] += n
    return counts


def find_catalogs(source: SourceConfig, lang: str) -> list[Path]:
    found = []
    for root in source.locale_dirs:
        found += sorted((Path(root) / lang / "LC_MESSAGES").glob("*.mo"))
    for extra in source.extra_catalog_dirs:
        if not Path(extra).is_dir():
            raise DataError(f"{extra}: extra_catalog_dirs folder not found")
        found += sorted(Path(extra).glob("*.mo"))
    return found


def domain_map_path(source: SourceConfig) -> Path:
    return Path(source.domain_map) if source.domain_map else DEFAULT_DOMAIN_MAP


def catalog_inputs(source: SourceConfig, src_lang: str, tgt_lang: str) -> list[Path]:
    """Files whose change must invalidate a cached corpus: catalogs, their folders, the map."""
    lang, _ = target_language(src_lang, tgt_lang)
    dirs = [Path(r) / lang / "LC_MESSAGES" for r in source.locale_dirs]
    dirs += [Path(e) for e in source.extra_catalog_dirs]
    return find_catalogs(source, lang) + [d for d in dirs if d.is_dir()] + \
        [domain_map_path(source)]


def build_gettext_corpus(source: SourceConfig, src_lang: str, tgt_lang: str,
                         log: Callable[[str], None] = print) -> tuple[datasets.Dataset, dict]:
    """Read every catalog for the language; return rows and a manifest for the report."""
    lang, en_is_src = target_language(src_lang, tgt_lang)
    map_path = domain_map_path(source)
    rules = load_domain_map(map_path)
    catalogs = find_catalogs(source, lang)
    if not catalogs:
        langs = available_languages(source.locale_dirs)
        top = ", ".join(f"{k} ({v})" for k, v in langs.most_common(15)) or "none"
        raise DataError(f"gettext corpus: no .mo catalogs for language {lang!r} under "
                        f"{', '.join(source.locale_dirs)}; languages here (catalogs): {top}")
    counts: Counter = Counter()
    pairs: dict[tuple[str, str], set[str]] = {}
    per_catalog: dict[str, int] = {}
    skipped: dict[str, str] = {}
    unmapped: list[str] = []
    for path in catalogs:
        stem = path.stem
        try:
            cat = parse_mo(path)
        except DataError as err:
            skipped[str(path)] = str(err)
            log(f"gettext: skipping catalog {err}")
            continue
        labels = labels_for(stem, rules)
        if not labels:
            labels = [FALLBACK_LABEL]
            unmapped.append(stem)
        kept = 0
        for ctx, singular, plural, forms in cat.entries:
            if ctx is not None:
                counts["with_context"] += 1
            candidates = [(singular, forms[0])]
            if plural is not None:
                counts["plural_entries"] += 1
                if len(forms) >= 2:
                    candidates.append((plural, forms[1]))
                elif cat.nplurals == 1:
                    candidates.append((plural, forms[0]))
            for msgid, msgstr in candidates:
                pair = clean_message(msgid, msgstr, counts)
                if pair is None:
                    continue
                kept += 1
                pairs.setdefault(pair, set()).update(labels)
        per_catalog[str(path)] = kept
    if not pairs:
        raise DataError(f"gettext corpus: no usable messages in {len(catalogs)} catalogs for "
                        f"{lang!r}")
    en, other = [p[0] for p in pairs], [p[1] for p in pairs]
    domains = [sorted(v) for v in pairs.values()]
    per_domain: Counter = Counter(lab for labs in domains for lab in labs)
    manifest = {
        "language": lang,
        "domain_map": str(map_path),
        "catalogs": per_catalog,
        "catalogs_skipped": skipped,
        "unmapped_catalogs": sorted(set(unmapped)),
        "pairs": len(pairs),
        "multilabel_pairs": sum(1 for d in domains if len(d) > 1),
        "domains": dict(sorted(per_domain.items())),
        "counts": dict(sorted(counts.items())),
    }
    if unmapped:
        log(f"gettext: {len(set(unmapped))} catalogs not in {map_path} labelled "
            f"{FALLBACK_LABEL!r}: {', '.join(sorted(set(unmapped)))}")
    src, tgt = (en, other) if en_is_src else (other, en)
    return make_dataset(src, tgt, domains), manifest
