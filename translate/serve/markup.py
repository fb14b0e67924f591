"""HTML documents through a model's batcher (``format: "html"``).

:class:`translate.inference.html.HtmlJob` lays documents out in segments and, once given
the segments' translations, puts the tags back around the words they wrapped. Here the
segments go to the model's batcher like any request's sentences - decoded with everyone
else's - and the laying out and rendering (parsing, alignment: CPU work, but no model) run
in a small thread pool, never on the event loop. The segments that have tags to place ask
the worker for their attention, so the tags are placed through it, as
``Translator.translate(..., format="html")`` places them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from translate.errors import TranslateError
from translate.inference.translator import Translation
from translate.serve.batcher import Batcher, Options

__all__ = ["HtmlUnavailable", "translate_documents"]

_POOL = None  # created on first use: a service without HTML requests starts no threads

Queue = Callable[[list[str], Options], Awaitable[list[Translation]]]


class HtmlUnavailable(TranslateError):
    """The HTML parser is not installed (it comes with the serve extra)."""


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="translate-html")
    return _POOL


async def translate_documents(batcher: Batcher, documents: list[str], options: Options,
                              queue: Queue) -> list[Translation]:
    """One translated document per document, in order; ``queue(texts, options)`` decodes
    the segments on ``batcher``."""
    try:
        from translate.inference.html import HtmlError, HtmlJob
    except ImportError as err:  # pragma: no cover - the module ships with the package
        raise HtmlUnavailable(str(err)) from None
    loop = asyncio.get_running_loop()
    try:
        # The translator is read only for its tokenizer and thresholds (and an empty text,
        # which never reaches the model); decoding is the batcher's.
        job = await loop.run_in_executor(_pool(), HtmlJob, batcher.translator, documents)
    except HtmlError as err:
        raise HtmlUnavailable(str(err)) from None
    if job.attention:  # some segment has a tag to place
        options = dataclasses.replace(options, attention=True)
    translated = await queue(job.texts, options) if job.texts else []
    for k, result in enumerate(translated):
        for message in result.warnings:
            job.warn(k, message)
    return await loop.run_in_executor(_pool(), job.finish, translated)
