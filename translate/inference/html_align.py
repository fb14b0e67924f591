"""Put a segment's inline tags around the translated words their source words became.

A segment is translated as plain text, whole, so the model sees the sentence and not
fragments of it. Each inline tag wrapped some source words; the model's attention says, for
every output piece, which source pieces it was translated from. Pieces are grouped into
*units* (words, and runs of punctuation apart, so ``<b>Hund</b>.`` can become
``<b>dog</b>.``), the attention is summed into a unit-to-unit matrix ``M`` (each output
unit's row sums to 1), and each output unit is aligned to the source unit it attends to
most.

Tags are then placed by one dynamic program over the segment's events (open tag, close
tag, atom) in input order, each at a boundary between output units, never out of order, so
the tag sequence stays exactly the input's and nesting is preserved. A tag's score is, over
the output units it wraps, ``mass`` for a unit aligned inside the tag and ``mass - 1`` for
one aligned outside (``mass``: its attention on the tag's source words). That sum splits
into a term for the open and one for the close, so the program is linear in the events
times the output length. A tag that wrapped words wraps at least one output unit when its
open and close are neighbours and the output has room (so nothing vanishes into ``<b></b>``);
an atom (an image, a ``<code>``, a comment) stays next to the output unit aligned to the
source word it was written against, and one that followed words still follows one.

:func:`proportional` is the alignment without a model: output unit ``t`` of ``T`` taken as
the source unit at the same relative position. It is what the benchmark compares with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from translate.inference.html_segments import Event, Segment

__all__ = ["attention_matrix", "copy_anchors", "place", "proportional", "render",
           "units"]

_UNIT = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]+")
_NEG = -1e9
_ATOM_PULL = 0.1  # per unit of distance from where an atom's neighbour word went


def units(text: str, cuts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Character spans of ``text``'s words and punctuation runs, also cut at ``cuts``."""
    spans = [m.span() for m in _UNIT.finditer(text)]
    if not cuts:
        return spans
    inner = sorted(set(cuts))
    out: list[tuple[int, int]] = []
    for a, b in spans:
        for c in inner:
            if a < c < b:
                out.append((a, c))
                a = c
        out.append((a, b))
    return out


def _membership(pieces: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]],
                ) -> np.ndarray:
    """[pieces, units]: the characters each piece shares with each unit. A piece with no
    characters in any unit (a lone word boundary ``▁``) goes to the next unit."""
    out = np.zeros((len(pieces), len(spans)), dtype=np.float64)
    for p, (a, b) in enumerate(pieces):
        for u, (c, d) in enumerate(spans):
            if c >= b:
                break
            out[p, u] = max(0, min(b, d) - max(a, c))
        if not out[p].any() and spans:
            nxt = next((u for u, (c, _) in enumerate(spans) if c >= a), len(spans) - 1)
            out[p, nxt] = 1.0
    return out


def attention_matrix(weights: np.ndarray, src_pieces: Sequence[tuple[int, int]],
                     tgt_pieces: Sequence[tuple[int, int]], src_units: Sequence[tuple[int, int]],
                     tgt_units: Sequence[tuple[int, int]]) -> np.ndarray:
    """[output units, source units] from piece attention ``weights`` [output, source]: an
    output unit's row is the mean of its pieces' rows, a source piece's weight is shared
    among the units it overlaps."""
    src = _membership(src_pieces, src_units)
    src /= np.maximum(src.sum(axis=1, keepdims=True), 1e-9)
    tgt = (_membership(tgt_pieces, tgt_units) > 0).astype(np.float64)
    tgt /= np.maximum(tgt.sum(axis=0, keepdims=True), 1e-9)
    m = tgt.T @ weights.astype(np.float64) @ src
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)


def copy_anchors(m: np.ndarray, src: str, src_units: Sequence[tuple[int, int]], tgt: str,
                 tgt_units: Sequence[tuple[int, int]]) -> np.ndarray:
    """``m`` with each output unit written exactly as some source unit (punctuation, a
    number, a name the model copied) aligned to that unit alone: of several, the one ``m``
    weighs most, then the nearest in relative position."""
    m = m.copy()
    where: dict[str, list[int]] = {}
    for s, (a, b) in enumerate(src_units):
        where.setdefault(src[a:b].casefold(), []).append(s)
    n_out, n_src = m.shape
    for t, (a, b) in enumerate(tgt_units):
        found = where.get(tgt[a:b].casefold())
        if not found or n_src == 0:
            continue
        rel = (t + 0.5) / n_out
        s = max(found, key=lambda c: (m[t, c], -abs((c + 0.5) / n_src - rel)))
        m[t] = 0.0
        m[t, s] = 1.0
    return m


def proportional(n_out: int, n_src: int) -> np.ndarray:
    """Output unit ``t`` aligned to the source unit at the same relative position."""
    m = np.zeros((n_out, max(n_src, 1)))
    for t in range(n_out):
        m[t, min(int((t + 0.5) * n_src / n_out), max(n_src - 1, 0))] = 1.0
    return m[:, :n_src] if n_src else m[:, :0]


# --------------------------------------------------------------------------- placement


def _scores(m: np.ndarray, events: Sequence[Event], bounds: Sequence[int]) -> list[np.ndarray]:
    """Per event, its score at each output boundary 0..T."""
    n_out, n_src = m.shape
    best = m.argmax(axis=1) if n_src else np.zeros(n_out, dtype=int)
    positions = np.arange(n_out + 1)
    out = []
    for k, e in enumerate(events):
        if e.kind == "atom":
            b = bounds[k]
            if n_out == 0 or n_src == 0:
                target = 0
            elif e.glue == "prev" and b > 0:
                target = int(m[:, b - 1].argmax()) + 1
            elif b < n_src:
                target = int(m[:, b].argmax())
            else:
                target = n_out
            score = -_ATOM_PULL * np.abs(positions - target)
            if b > 0 and n_out > 0:  # words came before it: a word still does (at the start
                score[0] = _NEG      # of a page, before any word, it would leave the body)
            out.append(score)
            continue
        a, b = (bounds[k], bounds[e.pair]) if e.kind == "open" else (bounds[e.pair], bounds[k])
        inside = (best >= a) & (best < b)
        gain = m[:, a:b].sum(axis=1) - (~inside)
        cum = np.concatenate([[0.0], np.cumsum(gain)])
        out.append(-cum if e.kind == "open" else cum)
    return out


def place(m: np.ndarray, events: Sequence[Event], bounds: Sequence[int]) -> list[int]:
    """The output boundary (0..T) of each event, in order (see the module's docstring).
    ``bounds``: each event's boundary among the source units."""
    if not events:
        return []
    scores = _scores(m, events, bounds)
    strict = [k > 0 and e.kind == "close" and e.pair == k - 1 and bounds[k] > bounds[k - 1]
              for k, e in enumerate(events)]
    for keep_words in (True, False):
        path = _best_path(scores, strict if keep_words else [False] * len(events))
        if path is not None:
            return path
    raise AssertionError("unreachable: the program without constraints always has a path")


def _best_path(scores: list[np.ndarray], strict: list[bool]) -> list[int] | None:
    n = len(scores[0])
    total = scores[0].copy()
    back: list[np.ndarray] = []
    for k in range(1, len(scores)):
        running = np.maximum.accumulate(total)
        fresh = np.concatenate([[True], total[1:] > running[:-1]])
        arg = np.maximum.accumulate(np.where(fresh, np.arange(n), 0))
        if strict[k]:  # at least one unit after the previous event
            running = np.concatenate([[_NEG], running[:-1]])
            arg = np.concatenate([[0], arg[:-1]])
        total = scores[k] + running
        back.append(arg)
    if total.max() <= _NEG / 2:
        return None
    path = [int(total.argmax())]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1]


# --------------------------------------------------------------------------- writing


def render(seg: Segment, target: str, spans: Sequence[tuple[int, int]],
           positions: Sequence[int]) -> str:
    """The translated segment with its events at ``positions`` (output unit boundaries).
    At a boundary, closing tags and atoms glued to the word before go before the space,
    the rest after it; their order is the input's."""
    at: dict[int, list[Event]] = {}
    for e, x in zip(seg.events, positions, strict=True):
        at.setdefault(x, []).append(e)
    out = [seg.prefix]
    cursor = 0
    for x in range(len(spans) + 1):
        left = spans[x - 1][1] if x else 0
        right = spans[x][0] if x < len(spans) else len(target)
        out.append(seg.escape(target[cursor:left]))
        here = at.get(x, [])
        k = 0
        while x and k < len(here) and (here[k].kind == "close" or (
                here[k].kind == "atom" and here[k].glue in ("prev", "none"))):
            k += 1
        last = x == len(spans)
        out.extend(_spaced(e, x, last, before=True) for e in here[:k])
        out.append(seg.escape(target[left:right]))
        out.extend(_spaced(e, x, last, before=False) for e in here[k:])
        cursor = right
    out.append(seg.escape(target[cursor:]))
    out.append(seg.suffix)
    return "".join(out)


def _spaced(e: Event, x: int, last: bool, before: bool) -> str:
    """An event's text; an atom that stood between spaces gets a space on the side the
    boundary's own space is not (before the space: after a word; after it: before one)."""
    if e.kind != "atom" or e.glue != "none":
        return e.text
    if before:
        return f" {e.text}" if x else e.text
    return e.text if last else f"{e.text} "
