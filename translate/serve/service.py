"""What the handlers of both APIs share: the model, its queue, the limits and the metrics.

Handlers only parse, check and wait: every sentence goes through the :class:`Batcher`'s
queue to the worker that owns the model, so the event loop keeps answering (health,
metrics, other clients, a client that sends slowly or goes away) while batches decode.
"""

from __future__ import annotations

import asyncio
import time

from translate.config import ConfigError
from translate.inference.translator import Translator
from translate.search.domain_choice import choose
from translate.serve.batcher import Batcher, Expired, Options, QueueFull, Unavailable
from translate.serve.limits import Limits, RequestError
from translate.serve.prometheus import Metrics

__all__ = ["RETRY_AFTER", "Service"]

RETRY_AFTER = "1"  # seconds; a full queue drains in about a batch's time


class Service:
    """The translator (read-only here), its queue, the limits and the metrics."""

    def __init__(self, translator: Translator, batcher: Batcher, limits: Limits,
                 metrics: Metrics, name: str) -> None:
        self.translator = translator
        self.batcher = batcher
        self.limits = limits
        self.metrics = metrics
        self.name = name
        cfg = translator.config
        self.source, self.target = cfg.data.src_lang, cfg.data.tgt_lang
        self.beam = translator.options(**batcher.translate_options).beam_size
        self.conditioned = bool(getattr(translator.model, "conditioned", False))

    def options(self, n_best: int, domain: object) -> Options:
        """Checked options; a bad domain is a 400 here, never an error in the worker."""
        if domain is None:
            domains = None
        elif isinstance(domain, str):
            domains = (domain,)
        elif isinstance(domain, list) and all(isinstance(d, str) for d in domain):
            domains = tuple(domain) or None
        else:
            raise RequestError(400, f"domain: expected a label or a list of labels, "
                                    f"got {domain!r}")
        try:
            choose(list(domains) if domains else None, self.translator.labels,
                   self.translator.thresholds, self.conditioned)
        except ConfigError as err:
            raise RequestError(400, str(err).replace("--domain ", "domain: ", 1)) from None
        return Options(n_best=n_best, domains=domains)

    def check_count(self, count: int, field: str) -> None:
        if count > self.limits.max_sentences:
            raise RequestError(413, f"{field}: {count} items exceed the limit of "
                                    f"{self.limits.max_sentences} per request "
                                    "(--max-sentences)")

    def ready(self) -> bool:
        return self.batcher.ready.is_set() and not self.batcher._closing

    async def translate(self, texts: list[str], options: Options, arrived: float) -> list:
        """Queue ``texts`` and wait for their translations, within the request's deadline."""
        if not texts:
            return []
        if len(texts) > self.limits.max_queue:  # (lines of texts) could never be queued
            raise RequestError(413, f"{len(texts)} sentences (lines) exceed the queue's "
                                    f"limit of {self.limits.max_queue} (--max-queue)")
        timeout = self.limits.timeout
        try:
            future = self.batcher.submit(texts, options, timeout - (time.monotonic() - arrived))
        except (QueueFull, Unavailable) as err:
            raise RequestError(503, str(err), {"Retry-After": RETRY_AFTER}) from None
        remaining = max(0.0, timeout - (time.monotonic() - arrived))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), remaining)
        except (TimeoutError, Expired):
            raise RequestError(504, f"the request outlived its deadline of {timeout:g} s "
                                    "(--timeout)") from None
