"""Cut a parsed page into what is translated and what is kept as written.

Block-level elements (``p``, ``div``, ``li``, ``td``, ``h1``... and ``br``) end a segment; a
run of text with the inline markup inside it (``b``, ``a``, ``span``...) is one
:class:`Segment`, translated whole, with each inline tag an :class:`Event` at a character
offset of the segment's plain text. Anything that is not translated travels as a unit
(an *atom*, written as the input had it): ``code``, ``kbd``, ``script``, ``textarea``,
anything with ``translate="no"`` or ``class="notranslate"``, images and other void
elements, comments, an inline element with no text of its own. ``pre`` and a block with
``translate="no"`` are kept whole. A run with no words in it is kept as written. Every
element that is neither a block nor an atom (``b``, ``a``, ``span``, a custom element) is
inline, as browsers display it; one that holds a block ends segments like a block.
"""

from __future__ import annotations

import html as std_html
import re
from dataclasses import dataclass, field

from translate.inference.html_nodes import HTML_NS, Document, Element, Ghost, Source, Text
from translate.inference.html_write import (
    descendant_texts,
    end_text,
    escape_text,
    node_text,
    start_text,
    text_runs,
    write,
)

__all__ = ["ATOM", "BLOCK", "Event", "Segment", "layout", "untouched"]

BLOCK = frozenset("""address article aside blockquote body br button caption center col
colgroup datalist dd details dialog dir div dl dt fieldset figcaption figure footer form
frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html legend li listing main menu
nav noscript ol optgroup option p plaintext pre search section select summary table tbody
td tfoot th thead title tr ul xmp""".split())
# Inline elements kept whole, as written: literal text, embedded content, form controls.
ATOM = frozenset("""applet area audio base basefont bgsound canvas code embed iframe img
input keygen kbd link map math meta noembed noframes object param picture progress meter
rp rt ruby samp script slot source style svg template textarea track video wbr""".split())
# Never translated, whether inline or block (their text is code, data or markup).
_UNTOUCHED = frozenset({"code", "kbd", "samp", "pre", "listing", "xmp", "plaintext", "script",
                        "style", "textarea", "template", "svg", "math", "noembed",
                        "noframes", "iframe"})
_WS = " \t\n\r\f"
_WS_RUN = re.compile(f"[{_WS}]+")
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")


def untouched(el: Element) -> bool:
    """True when nothing inside ``el`` is translated."""
    if el.namespace not in (None, HTML_NS) or el.name in _UNTOUCHED:
        return True
    if str(el.attributes.get("translate", "")).strip().lower() == "no":
        return True
    return "notranslate" in str(el.attributes.get("class", "")).split()


@dataclass
class Event:
    """A tag or atom inside a segment, at ``offset`` in the segment's plain text.

    ``kind``: ``open``/``close`` (an inline tag; ``pair`` is the index of the other one) or
    ``atom``; ``glue``: for an atom, whether it sticks to the word before (``prev``) or
    after (``next``) it, or stands between spaces (``none``).
    """

    kind: str
    text: str
    offset: int
    pair: int = -1
    glue: str = "prev"


@dataclass
class Segment:
    """Inline content between two block boundaries.

    ``text`` is the plain text to translate (whitespace collapsed, stripped; empty when there
    is nothing to translate, and then ``verbatim`` is written). ``prefix``/``suffix``: the
    whitespace around the text, as written. ``entities``: characters the input wrote as
    entities, so a translation writes them the same way.
    """

    text: str
    events: list[Event]
    prefix: str = ""
    suffix: str = ""
    verbatim: str = ""
    entities: dict[str, str] = field(default_factory=dict)

    def escape(self, text: str) -> str:
        """A translation's text escaped for the page, with the input's entities."""
        return "".join(self.entities.get(c) or escape_text(c, None) for c in text)


# --------------------------------------------------------------------------- layout


def _classify(root: Document) -> tuple[set[int], set[int]]:
    """ids of the translatable elements that hold a block (they end segments rather than
    travel with words), and of those with text to translate."""
    holds: set[int] = set()
    texty: set[int] = set()
    order: list[Element] = []
    stack: list[Element] = [root]
    while stack:
        el = stack.pop()
        order.append(el)
        if not untouched(el):
            stack.extend(c for c in el.childNodes if isinstance(c, Element))
    for el in reversed(order):  # children before their parents
        if not untouched(el) and any(isinstance(c, Text) and c.data.strip(_WS)
                                     for c in el.childNodes):
            texty.add(id(el))
        parent = el.parent
        if isinstance(parent, Element):
            if _is_block_name(el) or id(el) in holds:
                holds.add(id(parent))
            if id(el) in texty:
                texty.add(id(parent))
    return holds, texty


def _is_block_name(el: Element) -> bool:
    return el.namespace in (None, HTML_NS) and el.name in BLOCK


def layout(doc: Document, src: Source) -> list[str | Segment]:
    """The document as pieces to write: strings as written, and segments to translate."""
    holds, texty = _classify(doc)
    out: list[str | Segment] = []
    strings: list[str] = []

    def flush_run(run: list) -> None:
        seg = _segment(run, src, texty)
        if not seg.text:
            strings.append(seg.verbatim)
            return
        if strings:
            out.append("".join(strings))
            strings.clear()
        out.append(seg)

    stack: list[tuple[str, object]] = [("container", doc)]
    while stack:
        kind, item = stack.pop()
        if kind == "close":
            strings.append(end_text(item, src))
        elif kind == "run":
            if item:
                flush_run(item)
        elif untouched(item):
            write(item, src, strings)
        else:
            tasks: list[tuple[str, object]] = []
            if not isinstance(item, Document):
                strings.append(start_text(item, src))
            run: list = []
            for child in item.childNodes:
                if isinstance(child, Element) and (_is_block_name(child) or id(child) in holds):
                    tasks += [("run", run), ("container", child)]
                    run = []
                else:
                    run.append(child)
            tasks.append(("run", run))
            if not isinstance(item, Document):
                tasks.append(("close", item))
            stack.extend(reversed(tasks))
    if strings:
        out.append("".join(strings))
    return out


# --------------------------------------------------------------------------- segments


def _atom(node, src: Source) -> str:
    if isinstance(node, Element):
        buf: list[str] = []
        write(node, src, buf)
        return "".join(buf)
    return node_text(node, src)


def _segment(run: list, src: Source, texty: set[int]) -> Segment:
    """One run of inline nodes as a segment (see :class:`Segment`)."""
    verbatim: list[str] = []
    for node in run:
        if isinstance(node, Element | Text):
            write(node, src, verbatim)
        else:
            verbatim.append(node_text(node, src))
    raw: list[str] = []
    size = 0
    events: list[tuple[Event, int]] = []  # with offsets into the raw text
    texts: list[tuple[int, str, str | None]] = []  # raw offset, decoded, as written
    entities: dict[str, str] = {}
    opened: list[int] = []
    stack: list[tuple[object, bool]] = [(n, False) for n in reversed(run)]
    while stack:
        node, closing = stack.pop()
        if closing:
            j = opened.pop()
            events[j][0].pair = len(events)
            events.append((Event("close", end_text(node, src), 0, pair=j), size))
        elif isinstance(node, Text):
            for data, written in text_runs(node, src):
                texts.append((size, data, written))
                raw.append(data)
                size += len(data)
                _collect_entities(written, entities)
        elif isinstance(node, Ghost) and node.end_tag is not None:
            continue  # a stray end tag: ignored by the parser, dropped among moved words
        elif isinstance(node, Element) and node.name == "title":
            stack.extend((c, False) for c in reversed(descendant_texts(node)))
        elif (isinstance(node, Element) and id(node) in texty and not node.self_closed
              and node.name not in ATOM):
            opened.append(len(events))
            events.append((Event("open", start_text(node, src), 0), size))
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.childNodes))
        else:
            events.append((Event("atom", _atom(node, src), 0), size))
    raw_text = "".join(raw)
    text, where = _collapse(raw_text)
    seg = Segment(text, [], verbatim="".join(verbatim), entities=entities)
    if not text:
        return seg
    lead = len(raw_text) - len(raw_text.lstrip(_WS))
    trail = len(raw_text) - len(raw_text.rstrip(_WS))
    for event, at in events:
        event.offset = min(where[at], len(text))
        if event.kind == "atom":
            event.glue = _glue(raw_text, at, lead, len(raw_text) - trail)
        seg.events.append(event)
    first = min((at for _, at in events), default=len(raw_text))
    last = max((at for _, at in events), default=0)
    seg.prefix = _written_edge(texts, min(lead, first), raw_text, start=True)
    seg.suffix = _written_edge(texts, min(trail, len(raw_text) - last), raw_text, start=False)
    return seg


def _glue(raw: str, at: int, first: int, last: int) -> str:
    """Which word an atom at ``raw[at]`` is written against (see :class:`Event`);
    ``first``/``last``: where the first and after the last non-space character are."""
    if at <= first or at >= last:
        return "next" if at <= first else "prev"
    if raw[at - 1] not in _WS:
        return "prev"
    return "next" if raw[at] not in _WS else "none"


def _collapse(raw: str) -> tuple[str, list[int]]:
    """``raw`` with runs of HTML whitespace as one space, stripped, and where each offset of
    ``raw`` lands in it."""
    out: list[str] = []
    where: list[int] = []
    space = True  # drops leading whitespace
    for ch in raw:
        where.append(len(out))
        if ch in _WS:
            if not space:
                out.append(" ")
                space = True
        else:
            out.append(ch)
            space = False
    where.append(len(out))
    if out and out[-1] == " ":
        out.pop()
    return "".join(out), where


def _written_edge(texts: list[tuple[int, str, str | None]], n: int, raw: str,
                  start: bool) -> str:
    """The ``n`` whitespace characters at the start (or end) of the segment as the input
    wrote them (a CR LF counts as one), else as decoded."""
    decoded = raw[:n] if start else raw[len(raw) - n:]
    if not n or not texts:
        return decoded
    at, data, written = texts[0] if start else texts[-1]
    touches = at == 0 if start else at + len(data) == len(raw)
    if not touches or written is None or len(data) < n:
        return decoded
    text = written if start else written[::-1]
    count = i = 0
    while count < n and i < len(text):
        if text[i] not in _WS:
            return decoded
        i += 2 if text[i:i + 2] in ("\r\n", "\n\r") else 1
        count += 1
    edge = text[:i]
    return edge if start else edge[::-1]


def _collect_entities(written: str | None, entities: dict[str, str]) -> None:
    if written is None or "&" not in written:
        return
    for m in _ENTITY.finditer(written):
        ch = std_html.unescape(m.group())
        if len(ch) == 1 and ch not in "&<>" and not (ch.isascii() and ch.isalnum()):
            entities[ch] = m.group()
