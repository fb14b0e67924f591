"""Translate HTML documents: the text is translated, the markup kept as the input wrote it.

``Translator.translate(texts, format="html")`` and ``python -m translate.infer
--input-format html`` come here. Each document is parsed as a browser would parse it
(:mod:`~translate.inference.html_tree`), cut into segments at block boundaries
(:mod:`~translate.inference.html_segments`); the segments of all documents are translated in
one :meth:`Translator.translate` call (batched as any list of sentences), and each segment's
inline tags are put back around the words they wrapped, through the model's attention
(:mod:`~translate.inference.html_align`). See docs/html.md.

Every document gets an answer: one the parser has to repair is answered after the repair;
should laying it out fail all the same, it comes back unchanged, with a warning saying so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from translate.errors import TranslateError

if TYPE_CHECKING:
    from translate.inference.html_segments import Segment


class Translates(Protocol):
    """What HTML translation needs of a translator (a
    :class:`~translate.inference.translator.Translator`; this module does not import it, the
    translator imports this one): its tokenizer, label thresholds and ``translate``, which
    returns ``Translation`` objects."""

    tokenizer: Any
    thresholds: list[float]

    def translate(self, texts: Sequence[str], **options) -> list[Any]: ...


__all__ = ["ALIGNMENTS", "FORMATS", "HtmlError", "HtmlJob", "translate_as",
           "translate_html"]

ALIGNMENTS = ("attention", "proportional")
FORMATS = ("text", "html")


class HtmlError(TranslateError, ValueError):
    """HTML cannot be translated here (the optional parser is missing, a bad option)."""


def _modules():
    try:
        from translate.inference import html_align, html_segments, html_tree
    except ImportError as err:
        raise HtmlError(f"format html needs the html5lib parser ({err.name} is not "
                        "installed): pip install 'translate[html]'") from None
    return html_tree, html_segments, html_align


def translate_as(fmt: str, translator: Translates, texts: Sequence[str],
                 **options) -> list[Any]:
    """``Translator.translate(texts, format=fmt)`` for a format other than ``text``."""
    if fmt != "html":
        raise HtmlError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return translate_html(translator, texts, **options)


def translate_html(translator: Translates, documents: Sequence[str], *,
                   align: str = "attention",
                   on_warning: Callable[[int, str], None] | None = None,
                   **options) -> list[Any]:
    """Translate each HTML document; one :class:`Translation` per document, in order.

    ``text`` is the translated document; ``score`` the mean of its segments' scores
    weighted by their length (None when it has nothing to translate, e.g. an empty
    document, which stays empty); ``warnings`` the segments' warnings and any fallback.
    ``options`` are :meth:`Translator.translate`'s search options (beam, batch_size,
    domains...). ``align``: ``attention`` (default) or ``proportional`` (no model
    alignment, for comparison). The segments of all documents go to the model in one call.
    """
    if options.pop("attention", False):
        raise HtmlError("attention: not available with format html (the answer is a page)")
    options.pop("format", None)
    job = HtmlJob(translator, documents, align, on_warning)
    return job.finish(translator.translate(job.texts, on_warning=job.warn,
                                           attention=job.attention, **options))


class HtmlJob:
    """HTML documents laid out for translation, for a caller that batches their segments
    with other texts (a service's batcher): translate ``texts`` with ``attention`` on
    where it says so (passing ``warn(k, message)`` as ``on_warning`` for text ``k``), then
    :meth:`finish` with the translations of exactly those texts, in order.
    :func:`translate_html` is the three steps in one call."""

    def __init__(self, translator: Translates, documents: Sequence[str],
                 align: str = "attention",
                 on_warning: Callable[[int, str], None] | None = None) -> None:
        if isinstance(documents, str):
            raise TypeError("HTML translation takes a list of documents, not a single string")
        if align not in ALIGNMENTS:
            raise HtmlError(f"align: {align!r} is not one of {', '.join(ALIGNMENTS)}")
        self.modules = _modules()
        self.translator, self.documents, self.align = translator, documents, align
        self.on_warning = on_warning
        blank = translator.translate([""])[0]  # an empty text never reaches the model
        self.results = [dataclasses.replace(blank, warnings=[], nbest=[], domains={},
                                            domain_probs={}, conditioning={})
                        for _ in documents]
        self.laid = [self._layout(i, doc) for i, doc in enumerate(documents)]
        self.owners = [(i, seg) for i, pieces in enumerate(self.laid) for seg in pieces
                       if not isinstance(seg, str)]
        self.texts = [seg.text for _, seg in self.owners]
        self.attention = align == "attention" and any(seg.events for _, seg in self.owners)

    def _layout(self, i: int, doc: str) -> list:
        if not doc.strip():
            return [doc]  # whitespace is kept as written; an empty document stays empty
        html_tree, html_segments, _ = self.modules
        try:
            return html_segments.layout(*html_tree.parse(doc))
        except Exception as err:  # noqa: BLE001 - a document is always answered
            _fallback(self.results, i, doc, err, self.on_warning)
            return [doc]

    def warn(self, k: int, message: str) -> None:
        """A warning about text ``k``, passed on as one about its document."""
        doc = self.owners[k][0]
        self.results[doc].warnings.append(message)
        if self.on_warning is not None:
            self.on_warning(doc, message)

    def finish(self, translated: Sequence[Any]) -> list[Any]:
        """One translated document per document, from the translations of ``texts``."""
        if len(translated) != len(self.texts):
            raise ValueError(f"finish() needs {len(self.texts)} translations, got "
                             f"{len(translated)}")
        html_align = self.modules[2]
        done = iter(translated)
        for i, pieces in enumerate(self.laid):
            segs = [(seg, next(done)) for seg in pieces if not isinstance(seg, str)]
            try:
                rendered = {id(seg): _render(seg, res, self.translator, self.align, html_align)
                            for seg, res in segs}
                self.results[i].text = "".join(p if isinstance(p, str) else rendered[id(p)]
                                               for p in pieces)
            except Exception as err:  # noqa: BLE001 - a document is always answered
                _fallback(self.results, i, self.documents[i], err, self.on_warning)
                continue
            _summarise(self.results[i], [r for _, r in segs], [len(s.text) for s, _ in segs],
                       self.translator)
        return self.results


def _fallback(results: list, i: int, doc: str, err: Exception,
              on_warning: Callable[[int, str], None] | None) -> None:
    msg = (f"could not lay the document out as HTML ({type(err).__name__}: "
           f"{' '.join(str(err).split())[:200]}); returned unchanged")
    results[i].text, results[i].score, results[i].nbest = doc, None, []
    results[i].warnings.append(msg)
    if on_warning is not None:
        on_warning(i, msg)


def _render(seg: Segment, res: Any, translator: Translates, align: str,
            html_align) -> str:
    """One translated segment, with its tags placed."""
    target, spans, m = _alignment(seg, res, translator, align, html_align)
    cuts = [e.offset for e in seg.events]
    src_units = html_align.units(seg.text, cuts)
    bounds = [sum(1 for _, end in src_units if end <= e.offset) for e in seg.events]
    if m is None or m.shape[1] != len(src_units):
        m = html_align.proportional(len(spans), len(src_units))
    m = html_align.copy_anchors(m, seg.text, src_units, target, spans)
    return html_align.render(seg, target, spans, html_align.place(m, seg.events, bounds))


def _alignment(seg: Segment, res: Any, translator: Translates, align: str,
               html_align) -> tuple[str, list[tuple[int, int]], np.ndarray | None]:
    """The output text, its units, and the unit alignment (None: use proportional)."""
    view = res.attention
    if align != "attention" or view is None or not seg.events:
        return res.text, html_align.units(res.text), None
    tok = translator.tokenizer
    src = tok.src_model.encode(seg.text, return_type="proto")
    if [p.piece for p in src.pieces] != list(view.source_pieces):
        return res.text, html_align.units(res.text), None  # split into parts: no one match
    rows = [r for r, p in enumerate(view.target_pieces) if p != "</s>"]
    ids = tok.tgt_model.piece_to_id([view.target_pieces[r] for r in rows])
    out = tok.tgt_model.decode(ids, return_type="proto")
    target = out.text
    tgt_units = html_align.units(target)
    src_units = html_align.units(seg.text, [e.offset for e in seg.events])
    m = html_align.attention_matrix(view.weights[rows], _spans(src.pieces, seg.text),
                                    _spans(out.pieces, target), src_units, tgt_units)
    return target, tgt_units, m


def _spans(pieces, text: str) -> list[tuple[int, int]]:
    """Character spans of sentencepiece pieces (their surfaces, without the space a word
    boundary piece carries), which partition ``text``."""
    out, at = [], 0
    for p in pieces:
        surface = p.surface
        start = at + len(surface) - len(surface.lstrip())
        at += len(surface)
        out.append((min(start, at), at))
    return out


def _summarise(result: Any, parts: list[Any], sizes: list[int],
               translator: Translates) -> None:
    """Score, domains and warnings of a document from its segments'."""
    scored = [(r.score, n) for r, n in zip(parts, sizes, strict=True) if r.score is not None]
    if scored:
        total = sum(n for _, n in scored)
        result.score = sum(s * n for s, n in scored) / max(total, 1)
        result.nbest = [(result.text, result.score)]
    if parts:
        result.scores_over = parts[0].scores_over
        result.conditioned_by = parts[0].conditioned_by
    probs = [r.domain_probs for r in parts if r.domain_probs]
    if probs:
        mean = {k: float(np.mean([p[k] for p in probs])) for k in probs[0]}
        result.domain_probs = mean
        result.domains = {k: v for (k, v), th in zip(mean.items(), translator.thresholds,
                                                    strict=False) if v >= th}
