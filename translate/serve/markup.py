"""HTML documents through a model's batcher (``format: "html"``).

:func:`translate.inference.html.translate_html` lays each document out in segments, asks a
translator for the segments' translations and puts the tags back around the words they
wrapped. In the service the model belongs to its batcher's worker, so the translator it is
given here is a stand-in: its ``translate`` queues the segments on the batcher - where they
are decoded with every other request's sentences - and waits for them; the tokenizer and the
label thresholds, which laying out and rendering read, are the loaded model's own. The
parsing and rendering run in a thread pool of their own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from translate.inference.translator import Translation, Translator
from translate.serve.batcher import Batcher, Options

__all__ = ["HtmlUnavailable", "translate_documents"]

# Threads that lay documents out and wait for their segments (they mostly wait).
_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="translate-html")
# Whether the batcher's worker can return attention, which places inline tags best; without
# it tags are placed in proportion to the words' positions.
_ATTENTION = "attention" in {f.name for f in dataclasses.fields(Options)}


class HtmlUnavailable(RuntimeError):
    """The HTML parser is not installed (it comes with the serve extra)."""


class _Queued:
    """A :class:`Translator` whose ``translate`` goes through ``batcher``."""

    def __init__(self, batcher: Batcher, options: Options, deadline: float,
                 on_timeout: Callable[[], BaseException]) -> None:
        self._translator: Translator = batcher.translator
        self._batcher, self._options, self._deadline = batcher, options, deadline
        self._on_timeout = on_timeout

    def __getattr__(self, name: str):  # tokenizer, thresholds, labels, config...
        return getattr(self._translator, name)

    def translate(self, texts: Sequence[str], on_warning=None, attention: bool = False,
                  **_options) -> list[Translation]:
        options = (dataclasses.replace(self._options, attention=True)
                   if attention and _ATTENTION else self._options)
        future = self._batcher.submit(list(texts), options,
                                      self._deadline - time.monotonic())
        try:
            results = future.result(max(0.0, self._deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            raise self._on_timeout() from None
        if on_warning is not None:
            for i, result in enumerate(results):
                for message in result.warnings:
                    on_warning(i, message)
        return results


async def translate_documents(batcher: Batcher, documents: list[str], options: Options,
                              deadline: float,
                              on_timeout: Callable[[], BaseException]) -> list[Translation]:
    """One translated document per document, in order, through ``batcher``."""
    try:
        from translate.inference.html import HtmlError, translate_html
    except ImportError as err:  # pragma: no cover - the module ships with the package
        raise HtmlUnavailable(str(err)) from None
    stand_in = _Queued(batcher, options, deadline, on_timeout)
    align = "attention" if _ATTENTION else "proportional"
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            _POOL, lambda: translate_html(stand_in, documents, align=align))
    except HtmlError as err:
        raise HtmlUnavailable(str(err)) from None
