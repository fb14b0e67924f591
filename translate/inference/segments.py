"""Inputs longer than the model's limit, cut into pieces that fit.

See :mod:`translate.inference.translator`.

Silently truncating would drop content; feeding a long input whole would run the encoder on
lengths it never saw in training. So a long input is split at sentence punctuation first,
then at whitespace, and as a last resort inside a word, and the pieces are translated one by
one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["split_long"]

# A sentence ends at . ! ? ; : or an ellipsis (optionally followed by closing quotes or
# brackets), and the next one starts after whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?;:…])[\"'»«”“)\]]*\s+")


def _pack(units: list[list[int]], limit: int) -> list[list[int]]:
    """Greedily concatenate consecutive id lists into chunks of at most ``limit`` ids."""
    chunks: list[list[int]] = []
    current: list[int] = []
    for ids in units:
        if current and len(current) + len(ids) > limit:
            chunks.append(current)
            current = []
        current = current + ids
    if current:
        chunks.append(current)
    return chunks


def split_long(text: str, encode: Callable[[list[str]], list[list[int]]],
               limit: int) -> list[list[int]]:
    """Split ``text`` into id sequences of at most ``limit`` pieces each.

    Sentences are kept whole where they fit, then words, and a single word longer than the
    limit is cut between pieces. Each unit is encoded on its own: with sentencepiece's dummy
    prefix, a unit encodes as it would after a space, so concatenated units reproduce the
    pieces of the joined text.
    """
    units: list[list[int]] = []
    for sentence in (s for s in _SENTENCE_END.split(text) if s.strip()):
        (ids,) = encode([sentence])
        if len(ids) <= limit:
            units.append(ids)
            continue
        words: list[list[int]] = []
        for word_ids in encode(sentence.split()):
            if len(word_ids) <= limit:
                words.append(word_ids)
            else:
                words.extend(word_ids[i:i + limit] for i in range(0, len(word_ids), limit))
        units.extend(_pack(words, limit))
    return _pack(units, limit)
