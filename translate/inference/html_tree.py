"""Parse HTML as a browser does, and remember which bytes of the input every node came from.

A translated page must keep everything that is not translated exactly as it was written:
tags with their attributes (quotes, entities, case), comments, the text of ``<code>`` or
``<script>``, the whitespace between blocks. A repairing parser builds the tree a browser
would (implied end tags, misnested ``<b><i></b></i>``, text foster-parented out of tables),
but gives back decoded names and values, not the input's bytes. So the parser here is
html5lib's implementation of the WHATWG algorithm, fed by its own tokenizer over a stream
that counts offsets: every token gets the span of input it was read from, and the tree
builder below attaches those spans to the nodes it makes.

What "the document after the parser's repair" means, precisely: the tree html5lib builds,
written back (:func:`~translate.inference.html_write.write`) with every element's start
tag, every comment and doctype, and every text run taken from the input as written; an end
tag the input wrote is kept as written, one the parser implied is written ``</name>``
(``html`` and ``body`` get none: their end tags are optional and stay where the input had
them); elements the parser implied without a start tag (``html``, ``head``, ``body``,
``tbody``...) are not written at all, since parsing the answer implies them again; an
element the parser cloned (a formatting element reopened in the next paragraph) is written
with its original's start tag. Tokens the parser ignores (a stray ``</i>``, a second
``<body>``) are kept in place as written, where parsing the answer ignores them again; an
unclosed ``<b`` at the very end is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from html5lib import _inputstream, _tokenizer, html5parser
from html5lib.constants import tokenTypes
from html5lib.treebuilders import base

from translate.inference.html_nodes import (
    HTML_NS,
    NO_END,
    TEXT_ONLY,
    Comment,
    Document,
    Element,
    Ghost,
    Source,
)

__all__ = ["parse"]

_CHARS = {tokenTypes["Characters"], tokenTypes["SpaceCharacters"]}
_START, _END = tokenTypes["StartTag"], tokenTypes["EndTag"]
_PARSE_ERROR = tokenTypes["ParseError"]


# --------------------------------------------------------------------------- tree builder


class _TreeBuilder(base.TreeBuilder):
    """html5lib's tree builder interface, recording which token made which node."""

    documentClass = Document
    elementClass = Element
    fragmentClass = Document

    def reset(self) -> None:
        super().reset()
        self.current: dict | None = None  # the source token being processed
        self.pending: list[dict] = []  # character tokens waiting in a table
        self.touched = False  # whether the current token made or closed a node
        self.created: list[Element] = []

    def _adopt(self, element: Element, token: dict) -> Element:
        cur = self.current
        if (cur is not None and cur["type"] == _START
                and (token is cur or token.get("data") is cur["data"])):
            element.start = cur["span"]  # (<image> becomes <img>: another token, same data)
            self.touched = True
        origin = getattr(token.get("data"), "origin", None)
        if origin is not None:
            element.origin = origin
        self.created.append(element)
        return element

    def createElement(self, token: dict) -> Element:  # noqa: N802
        return self._adopt(super().createElement(token), token)

    def insertElementNormal(self, token: dict) -> Element:  # noqa: N802
        return self._adopt(super().insertElementNormal(token), token)

    def insertComment(self, token: dict, parent=None) -> None:  # noqa: N802
        if parent is None:
            parent = self.openElements[-1]
        parent.appendChild(Comment(token["data"], self._own_span(token)))

    def insertDoctype(self, token: dict) -> None:  # noqa: N802
        self.document.appendChild(Comment(token["name"] or "html", self._own_span(token),
                                          doctype=True))

    def _own_span(self, token: dict) -> tuple[int, int] | None:
        if token is self.current:
            self.touched = True
            return token["span"]
        return None

    def reconstructActiveFormattingElements(self) -> None:  # noqa: N802
        # html5lib reopens formatting elements inside a <textarea> (or <plaintext>) before
        # its text, as the standard's "text" insertion mode does not: browsers never do.
        current = self.openElements[-1] if self.openElements else None
        if current is None or current.name not in TEXT_ONLY or current.namespace != HTML_NS:
            super().reconstructActiveFormattingElements()

    def insertText(self, data: str, parent=None) -> None:  # noqa: N802
        span, synthetic = self._text_span(data)
        if parent is None:
            parent = self.openElements[-1]
        if self.insertFromTable and self.openElements[-1].name in base.tableInsertModeElements:
            parent, before = self.getTableMisnestedNodePosition()
            parent.insertText(data, before, span=span, synthetic=synthetic)
        else:
            parent.insertText(data, span=span, synthetic=synthetic)

    def _text_span(self, data: str) -> tuple[tuple[int, int] | None, bool]:
        cur = self.current
        if cur is not None and cur["type"] in _CHARS:
            self.touched = True
            full = cur["data"]
            if data == full or (full.endswith(data) and full[:len(full) - len(data)] == "\n"):
                return cur["span"], False  # (a newline after <pre> is dropped on every parse)
            return None, False
        if self.pending and data == "".join(t["data"] for t in self.pending):
            return (self.pending[0]["span"][0], self.pending[-1]["span"][1]), False
        return None, not self.pending  # made up by the parser, not read


# --------------------------------------------------------------------------- tokenizer


class _Stream(_inputstream.HTMLUnicodeInputStream):
    """The whole input as one chunk, counting the offset of everything read."""

    def __init__(self, text: str) -> None:
        self._defaultChunkSize = len(text) + 1
        self.base = 0
        super().__init__(text)

    def readChunk(self, chunkSize=None):  # noqa: N802, N803
        self.base += self.chunkSize
        return super().readChunk(chunkSize)

    def offset(self) -> int:
        return self.base + self.chunkOffset


class _Tokenizer(_tokenizer.HTMLTokenizer):
    """html5lib's tokenizer; each token gets ``span``, the input it was read from, and the
    parser is told before and after each token is processed."""

    def __init__(self, text: str, parser: _Parser) -> None:
        super().__init__(text, parser=parser)
        self.stream = _Stream(text)

    def __iter__(self) -> Iterator[dict]:
        self.tokenQueue = deque()
        start = 0
        while self.state():
            self.stream.errors.clear()
            end = self.stream.offset()
            while self.tokenQueue:
                token = self.tokenQueue.popleft()
                if token["type"] == _PARSE_ERROR:
                    continue
                token["span"], start = (start, end), end
                self.parser.before(token)
                yield token
                self.parser.after(token)
        self.parser.before(None)


class _Parser(html5parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(tree=_TreeBuilder)
        self._open: list[Element] = []

    def parse_spans(self, text: str) -> Document:
        self.innerHTMLMode, self.container, self.scripting = False, None, False
        self.tokenizer = _Tokenizer(text, self)
        self.reset()
        self.mainLoop()
        return self.tree.document

    def before(self, token: dict | None) -> None:
        tree = self.tree
        tree.current, tree.touched, tree.created = token, False, []
        table_text = self.phases["inTableText"]
        tree.pending = list(table_text.characterTokens) if self.phase is table_text else []
        self._open = list(tree.openElements) if token and token["type"] == _END else []

    def after(self, token: dict) -> None:
        tree = self.tree
        kind = token["type"]
        if kind == _START:
            for e in tree.created:
                if e.start == token["span"] and e not in tree.openElements:
                    e.self_closed = True
        elif kind == _END and token["name"] not in NO_END:
            still = {id(e) for e in tree.openElements}
            named = [e for e in self._open + tree.created if id(e) not in still
                     and e.name.lower() == token["name"] and e.end is None]
            if named:
                max(named, key=lambda e: e.serial).end = token["span"]
                tree.touched = True
        if tree.touched or (kind in _CHARS and self.phase is self.phases["inTableText"]):
            return
        parent = tree.openElements[-1] if tree.openElements else tree.document
        parent.appendChild(Ghost(token["span"], token["name"] if kind == _END else None))


def parse(text: str) -> tuple[Document, Source]:
    """The repaired tree of ``text``, its nodes holding spans of the returned source."""
    src = Source(text)
    return _Parser().parse_spans(src.norm), src
