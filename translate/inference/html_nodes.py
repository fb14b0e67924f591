"""The tree an HTML page is parsed into, each node holding the span of input it came from.

Element, text, comment and ignored-token nodes implement the interface html5lib's tree
construction calls (``appendChild``, ``insertText``, ``cloneNode``...), so the browser's
algorithm builds them directly (:mod:`~translate.inference.html_tree`); spans are offsets
into :class:`Source`'s normalised text, mapped back to the input's own bytes when written
(:mod:`~translate.inference.html_write`).
"""

from __future__ import annotations

import itertools

from html5lib.constants import namespaces
from html5lib.treebuilders import base

__all__ = ["HTML_NS", "NO_END", "RAW_TEXT", "TEXT_ONLY", "Comment", "Document", "Element",
           "Ghost", "Source", "Text"]

HTML_NS = namespaces["html"]
# Elements whose text the tokenizer reads raw: no entities in them, nothing to escape.
RAW_TEXT = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes", "plaintext"})
# Elements that hold text only: what html5lib nests in them (a formatting element it
# reopens, as browsers do not) is written as the text it wraps.
TEXT_ONLY = RAW_TEXT | {"textarea", "title"}
# End tags never written for these: optional in HTML, and a document's trailing newline
# after </html> would otherwise move inside them.
NO_END = frozenset({"html", "body"})


class Source:
    """The input text and a map from html5lib's offsets (line breaks normalised to ``\\n``,
    as its input stream does) back to offsets in the input."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.norm = text.replace("\r\n", "\n").replace("\r", "\n")
        self._map: list[int] | None = None
        if len(self.norm) != len(text) or "\r" in text:
            self._map, i = [], 0
            for _ in range(len(self.norm)):
                self._map.append(i)
                i += 2 if text.startswith("\r\n", i) else 1
            self._map.append(len(text))

    def raw(self, span: tuple[int, int]) -> str:
        """The input as written over a span of normalised offsets."""
        a, b = span
        if self._map is not None:
            a, b = self._map[a], self._map[b]
        return self.text[a:b]


class Text:
    """A text node: its decoded chunks, each with the span it was read from (None for text
    the parser made up, e.g. ``<isindex>``'s prompt, which is never written)."""

    __slots__ = ("chunks", "parent")

    def __init__(self) -> None:
        self.chunks: list[tuple[str, tuple[int, int] | None, bool]] = []  # data, span, synthetic
        self.parent: Element | None = None

    @property
    def data(self) -> str:
        return "".join(d for d, _, synthetic in self.chunks if not synthetic)


class _Attrs(dict):
    """Attributes of a clone, remembering the element it was cloned from."""

    origin: Element | None = None


class Element(base.Node):
    """An element with the spans of its start and end tags as the input wrote them."""

    _serial = itertools.count()

    def __init__(self, name: str, namespace: str | None = None) -> None:
        super().__init__(name)
        self.namespace = namespace
        self.start: tuple[int, int] | None = None  # the start tag as written
        self.end: tuple[int, int] | None = None  # the end tag as written
        self.origin: Element | None = None  # the element this one is a clone of
        self.self_closed = False  # closed by its own start tag (void or <svg/>)
        self.serial = next(Element._serial)

    @property
    def nameTuple(self) -> tuple[str, str]:  # noqa: N802 (html5lib's interface)
        return (self.namespace or HTML_NS, self.name)

    def appendChild(self, node) -> None:  # noqa: N802
        if isinstance(node, Text) and self.childNodes and isinstance(self.childNodes[-1], Text):
            self.childNodes[-1].chunks.extend(node.chunks)
            return
        node.parent = self
        self.childNodes.append(node)

    def insertText(self, data: str, insertBefore=None, span=None,  # noqa: N802, N803
                   synthetic: bool = False) -> None:
        index = len(self.childNodes) if insertBefore is None else self.childNodes.index(
            insertBefore)
        if index and isinstance(self.childNodes[index - 1], Text):
            self.childNodes[index - 1].chunks.append((data, span, synthetic))
            return
        node = Text()
        node.chunks.append((data, span, synthetic))
        node.parent = self
        self.childNodes.insert(index, node)

    def insertBefore(self, node, refNode) -> None:  # noqa: N802, N803
        node.parent = self
        self.childNodes.insert(self.childNodes.index(refNode), node)

    def removeChild(self, node) -> None:  # noqa: N802
        self.childNodes.remove(node)
        node.parent = None

    def reparentChildren(self, newParent) -> None:  # noqa: N802, N803
        for child in self.childNodes:
            newParent.appendChild(child)
        self.childNodes = []

    def cloneNode(self) -> Element:  # noqa: N802
        clone = Element(self.name, self.namespace)
        attrs = _Attrs(self.attributes)
        attrs.origin = clone.origin = self
        clone.attributes = attrs
        return clone

    def hasContent(self) -> bool:  # noqa: N802
        return bool(self.childNodes)

    def start_span(self) -> tuple[int, int] | None:
        """The start tag to write: its own, else its original's (a clone), else None."""
        node: Element | None = self
        while node is not None and node.start is None:
            node = node.origin
        return None if node is None else node.start


class Document(Element):
    def __init__(self) -> None:
        super().__init__("#document")


class Comment(base.Node):
    """A comment (or a doctype) with the span it was written over."""

    def __init__(self, data: str, span: tuple[int, int] | None = None,
                 doctype: bool = False) -> None:
        super().__init__("#comment")
        self.data, self.span, self.doctype = data, span, doctype


class Ghost(base.Node):
    """A token the parser ignored (a stray end tag, a second ``<body>``), kept as written."""

    def __init__(self, span: tuple[int, int], end_tag: str | None) -> None:
        super().__init__("#ghost")
        self.span, self.end_tag = span, end_tag
