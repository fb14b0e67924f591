"""Write a parsed page back with the input's own bytes (see
:mod:`~translate.inference.html_tree` for what is written how)."""

from __future__ import annotations

import html as std_html

from translate.inference.html_nodes import (
    HTML_NS,
    NO_END,
    RAW_TEXT,
    TEXT_ONLY,
    Comment,
    Document,
    Element,
    Ghost,
    Source,
    Text,
)

__all__ = ["descendant_texts", "end_text", "escape_text", "node_text", "start_text",
           "text_runs", "write"]

# The parser drops a newline right after these start tags, on every parse.
_DROPS_NEWLINE = frozenset({"pre", "listing", "textarea"})


def _decoded(raw: str, parent: Element | None) -> str:
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    return raw if parent is not None and parent.name in RAW_TEXT else std_html.unescape(raw)


def text_runs(node: Text, src: Source) -> list[tuple[str, str | None]]:
    """A text node as (decoded text, the input as written or None) runs: adjacent chunks
    read from adjacent input merge; a run whose input does not decode to its text (the
    parser changed it) has no written form."""
    runs: list[tuple[str, str | None]] = []
    group: list[tuple[str, tuple[int, int] | None, bool]] = []

    def flush() -> None:
        if not group:
            return
        data = "".join(d for d, _, _ in group)
        spans = [s for _, s, _ in group]
        raw = None
        if all(s is not None for s in spans):
            raw = src.raw((spans[0][0], spans[-1][1]))
            decoded = _decoded(raw, node.parent)
            if decoded != data and not (decoded == "\n" + data and node.parent is not None
                                        and node.parent.name in _DROPS_NEWLINE):
                raw = None
        runs.append((data, raw))
        group.clear()

    for chunk in node.chunks:
        if chunk[2]:
            continue
        if group and (chunk[1] is None or group[-1][1] is None
                      or group[-1][1][1] != chunk[1][0]):
            flush()
        group.append(chunk)
    flush()
    return runs


def escape_text(data: str, parent: Element | None) -> str:
    """Text the input did not write (or a translation), escaped for where it goes."""
    if parent is not None and parent.name in RAW_TEXT:
        return data
    return data.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def start_text(el: Element, src: Source) -> str:
    span = el.start_span()
    return "" if span is None else src.raw(span)


def end_text(el: Element, src: Source) -> str:
    if el.end is not None:
        return src.raw(el.end)
    if el.self_closed or el.name in NO_END or el.start_span() is None:
        return ""
    return f"</{el.name}>"


def node_text(node, src: Source) -> str:
    """A comment, doctype or ignored token as written (an unterminated one, closed)."""
    if isinstance(node, Ghost):
        return src.raw(node.span)
    raw = src.raw(node.span) if node.span is not None else ""
    if raw.endswith(">"):
        return raw
    return f"<!DOCTYPE {node.data}>" if node.doctype else f"<!--{node.data}-->"


def write(node, src: Source, out: list[str]) -> None:
    """Append ``node`` and its subtree to ``out`` as written (see the module's docstring)."""
    stack: list[tuple[object, bool]] = [(node, False)]
    while stack:
        n, closing = stack.pop()
        if closing:
            out.append(end_text(n, src))
        elif isinstance(n, Text):
            out.extend(raw if raw is not None else escape_text(data, n.parent)
                       for data, raw in text_runs(n, src))
        elif isinstance(n, Comment | Ghost):
            out.append(node_text(n, src))
        else:
            if not isinstance(n, Document):
                out.append(start_text(n, src))
                stack.append((n, True))
            if n.name in TEXT_ONLY and n.namespace in (None, HTML_NS):
                stack.extend((t, False) for t in reversed(descendant_texts(n)))
            else:
                stack.extend((c, False) for c in reversed(n.childNodes))


def descendant_texts(el: Element) -> list[Text]:
    """The text nodes under ``el``, in document order."""
    out, stack = [], list(reversed(el.childNodes))
    while stack:
        n = stack.pop()
        if isinstance(n, Text):
            out.append(n)
        elif isinstance(n, Element):
            stack.extend(reversed(n.childNodes))
    return out
