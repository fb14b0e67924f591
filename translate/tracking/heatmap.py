"""Attention heatmaps as images: pillow and numpy only.

Output pieces down the left (one row each, in output order, ``</s>`` last), source pieces
along the top (one column each, written bottom-to-top so that long pieces fit), one square
cell per weight from white (0) to dark blue (1). The returned :class:`PIL.Image.Image`
records where its grid is in ``image.info["heatmap_grid"] = (left, top, cell)``.

Labels use DejaVu Sans when the system has it (it covers accented Latin, Cyrillic, Greek
and sentencepiece's ``▁``); otherwise pillow's own font, which holds ASCII only, with
accents dropped from letters it lacks (``ü`` → ``u``) and ``?`` for anything else. No
plotting library is needed for a grid of coloured squares and two rows of labels.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["render_heatmap"]

# matplotlib's "Blues" anchors: white for no attention, dark blue for all of it.
_ANCHORS = np.array([[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225],
                     [107, 174, 214], [66, 146, 198], [33, 113, 181], [8, 81, 156],
                     [8, 48, 107]], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)),
                           _ANCHORS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)
PAD = 6  # pixels between labels, grid and border


@functools.lru_cache(maxsize=4)
def _font(size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """(font, whether it covers more than ASCII)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), True
    except OSError:
        return ImageFont.load_default(size=size), False


def _printable(text: str, rich: bool, max_chars: int) -> str:
    """``text`` as the font can draw it, cut to ``max_chars`` characters."""
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    if rich:
        return text
    out = []
    for ch in text.replace("▁", "_").replace("…", "..."):
        if ch.isascii():
            out.append(ch if ch.isprintable() else "?")
            continue
        base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        out.append(base or "?")
    return "".join(out)


def _width(font, text: str) -> int:
    return math.ceil(font.getlength(text)) if text else 0


def render_heatmap(weights, source_pieces: Sequence[str], target_pieces: Sequence[str], *,
                   cell: int = 20, font_size: int = 12, max_chars: int = 24) -> Image.Image:
    """The attention matrix ``weights`` ``[len(target_pieces), len(source_pieces)]`` (values
    in [0, 1]) as an RGB image; see the module docstring for the layout."""
    w = np.asarray(weights, dtype=np.float32)
    if w.shape != (len(target_pieces), len(source_pieces)):
        raise ValueError(f"weights of shape {w.shape} do not match {len(target_pieces)} output "
                         f"and {len(source_pieces)} source pieces")
    font, rich = _font(font_size)
    src = [_printable(p, rich, max_chars) for p in source_pieces]
    tgt = [_printable(p, rich, max_chars) for p in target_pieces]
    left = PAD + max((_width(font, t) for t in tgt), default=0) + PAD
    top = PAD + max((_width(font, s) for s in src), default=0) + PAD
    rows, cols = w.shape
    image = Image.new("RGB", (left + cols * cell + PAD, top + rows * cell + PAD), "white")
    if rows and cols:
        levels = np.clip(np.rint(np.nan_to_num(w) * 255), 0, 255).astype(np.intp)
        grid = np.repeat(np.repeat(_LUT[levels], cell, axis=0), cell, axis=1)
        image.paste(Image.fromarray(np.ascontiguousarray(grid), "RGB"), (left, top))
    draw = ImageDraw.Draw(image)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font_size, 0)
    line = ascent + descent
    for r, label in enumerate(tgt):  # right-aligned against the grid, centred on the row
        draw.text((left - PAD - _width(font, label), top + r * cell + (cell - line) // 2),
                  label, fill="black", font=font)
    for c, label in enumerate(src):  # drawn flat, turned a quarter left: reads upwards
        if not label:
            continue
        flat = Image.new("L", (_width(font, label) + 2, line), 0)
        ImageDraw.Draw(flat).text((1, 0), label, fill=255, font=font)
        upright = flat.rotate(90, expand=True)
        image.paste((0, 0, 0), (left + c * cell + (cell - upright.width) // 2,
                                top - PAD - upright.height), mask=upright)
    image.info["heatmap_grid"] = (left, top, cell)
    return image
