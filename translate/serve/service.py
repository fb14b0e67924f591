"""What the handlers of both APIs share, and a request's way from its texts to the models.

Handlers only parse, check and wait: every text is routed by its (source, target) pair -
its source detected first when the client sends ``auto`` - to the model (or the two models
of a pivot) that serves the pair, and queued on that model's :class:`Batcher`, so the event
loop keeps answering (health, metrics, other clients, a client that sends slowly or goes
away) while batches decode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from translate.config import ConfigError
from translate.inference.translator import Translation
from translate.search.domain_choice import choose
from translate.serve import markup
from translate.serve.batcher import (
    Batcher,
    Expired,
    Options,
    QueueFull,
    TranslationFailed,
    Unavailable,
)
from translate.serve.languages import language_name
from translate.serve.limits import Limits, RequestError
from translate.serve.prometheus import Metrics
from translate.serve.registry import RETRY_AFTER, Registry, Route

__all__ = ["RETRY_AFTER", "Ask", "Detected", "Service"]


class Detector(Protocol):
    def detect(self, text: str) -> list[tuple[str, float]]: ...


class Guard(Protocol):
    def check(self, api_key: object, client_ip: str | None, chars: int = 0, *,
              texts: int = 1) -> str: ...

    def frontend_settings(self) -> dict[str, bool]: ...


@dataclass(frozen=True)
class Detected:
    """A text's detected language, as LibreTranslate's ``detectedLanguage`` says it."""

    language: str
    confidence: float

    def record(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "language": self.language}


@dataclass(frozen=True)
class Ask:
    """What a request asks of every one of its texts."""

    n_best: int = 1
    domain: object = None  # /v1's field as sent: a label, a list of labels, or None
    format: str = "text"


@dataclass
class Service:
    """The models, the limits and the metrics; language detection and the keys and rate
    limits when the service has them."""

    registry: Registry
    limits: Limits
    metrics: Metrics
    detector: Detector | None = None
    guard: Guard | None = None

    # ------------------------------------------------------------------ checks

    def check_count(self, count: int, field: str) -> None:
        if count > self.limits.max_sentences:
            raise RequestError(413, f"{field}: {count} items exceed the limit of "
                                    f"{self.limits.max_sentences} per request "
                                    "(--max-sentences)")

    async def admit(self, client: str | None, api_key: object, texts: Sequence[str]) -> None:
        """The request's key and its client's limits (a 400, 403 or 429 when refused)."""
        if self.guard is not None:
            await asyncio.to_thread(self.guard.check, api_key, client,
                                    sum(len(t) for t in texts), texts=max(1, len(texts)))

    # ------------------------------------------------------------------ routing

    async def candidates(self, text: str) -> list[tuple[str, float]]:
        """The detector's guesses for ``text``, best first (confidence 0-100)."""
        assert self.detector is not None
        guesses = await asyncio.to_thread(self.detector.detect, text)
        return [(code, round(float(confidence), 2)) for code, confidence in guesses]

    async def detect(self, texts: Sequence[str], target: str) -> list[Detected]:
        """Each text's language (the detector's best guess), for ``source: auto``.

        A text with nothing to detect (no letter) is routed to the first source that
        reaches ``target``, with confidence 0.
        """
        sources = self.registry.sources
        reaching = [s for s in sources if s == target or (s, target) in self.registry.routes]
        fallback = (reaching or sources)[0]
        if self.detector is None:
            if len(sources) == 1:  # nothing to choose between
                return [Detected(sources[0], 100.0 if t.strip() else 0.0) for t in texts]
            raise RequestError(400, "source: 'auto' needs language detection, which this "
                                    f"service lacks; give one of {', '.join(sources)}")
        detector = self.detector
        guesses = await asyncio.to_thread(lambda: [detector.detect(t) for t in texts])
        return [Detected(g[0][0], round(float(g[0][1]), 2)) if g else Detected(fallback, 0.0)
                for g in guesses]

    def routes(self, sources: Sequence[str], target: str, model: str | None = None,
               where: Sequence[str] = ()) -> list[Route | None]:
        """Each text's route (None: source and target are one language, the text stays)."""
        if model is not None:
            route = self.registry.named(model)
            return [route] * len(sources)
        out: list[Route | None] = []
        for i, source in enumerate(sources):
            if source == target and source in self.registry.languages:
                out.append(None)
                continue
            try:
                out.append(self.registry.route(source, target))
            except RequestError as err:
                if not where:
                    raise
                # A detected source: say which text, and what was detected.
                served = self.registry.sources
                why = (f"which is not served; this service translates from "
                       f"{', '.join(served)} (see GET /languages)"
                       if not self.registry.targets(source)
                       else "but " + err.message.split(": ", 1)[1])
                raise RequestError(400, f"{where[i]}: detected language {source!r} "
                                        f"({language_name(source)}), {why}") from None
        return out

    def beam(self, routes: Sequence[Route | None]) -> int:
        """The smallest beam of the models that produce the answers (a pivot's last)."""
        beams = [r.models[-1].spec.beam for r in routes if r is not None]
        return min(beams) if beams else 1

    # ------------------------------------------------------------------ translating

    async def translate(self, texts: list[str], routes: Sequence[Route | None], ask: Ask,
                        arrived: float) -> list[Translation]:
        """Each text's translation along its route, in order, within the request's
        deadline; the routes of a request run side by side."""
        if len(texts) > self.limits.max_queue:  # (lines of texts) could never be queued
            raise RequestError(413, f"{len(texts)} sentences (lines) exceed the queue's "
                                    f"limit of {self.limits.max_queue} (--max-queue)")
        results: list[Translation | None] = [None] * len(texts)
        groups: dict[Route | None, list[int]] = {}
        for i, route in enumerate(routes):
            groups.setdefault(route, []).append(i)

        async def run(route: Route | None, indices: list[int]) -> None:
            mine = [texts[i] for i in indices]
            out = (await self._along(route, mine, ask, arrived) if route is not None
                   else [Translation(text=t, score=None) for t in mine])
            for i, result in zip(indices, out, strict=True):
                results[i] = result

        await asyncio.gather(*(run(r, ix) for r, ix in groups.items()))
        return results  # type: ignore[return-value]

    async def _along(self, route: Route, texts: list[str], ask: Ask,
                     arrived: float) -> list[Translation]:
        """Through each model of the route; a pivot's first leg gives its best only."""
        deadline = arrived + self.limits.timeout
        for leg, model in enumerate(route.models):
            last = leg == len(route.models) - 1
            async with self.registry.use(model, deadline) as batcher:
                options = self._options(batcher, ask) if last else Options()
                if ask.format == "html":
                    results = await self._documents(batcher, texts, options, deadline)
                else:
                    results = await self._queue(batcher, texts, options, deadline)
            texts = [r.text for r in results]
        return results

    def _late(self) -> RequestError:
        return RequestError(504, f"the request outlived its deadline of "
                                 f"{self.limits.timeout:g} s (--timeout)")

    async def _documents(self, batcher: Batcher, documents: list[str], options: Options,
                         deadline: float) -> list[Translation]:
        """HTML documents: their segments through the batcher, their markup kept."""
        async def queue(texts: list[str], opts: Options) -> list[Translation]:
            return await self._queue(batcher, texts, opts, deadline)

        try:
            return await markup.translate_documents(batcher, documents, options, queue)
        except markup.HtmlUnavailable as err:
            raise RequestError(501, f"format: html is not available here ({err})") from None

    @staticmethod
    def _options(batcher: Batcher, ask: Ask) -> Options:
        """Checked options; a bad domain is a 400 here, never an error in the worker."""
        domain = ask.domain
        if domain is None:
            domains = None
        elif isinstance(domain, str):
            domains = (domain,)
        elif isinstance(domain, list) and all(isinstance(d, str) for d in domain):
            domains = tuple(domain) or None
        else:
            raise RequestError(400, f"domain: expected a label or a list of labels, "
                                    f"got {domain!r}")
        translator = batcher.translator
        try:
            choose(list(domains) if domains else None, translator.labels,
                   translator.thresholds, bool(getattr(translator.model, "conditioned", False)))
        except ConfigError as err:
            raise RequestError(400, str(err).replace("--domain ", "domain: ", 1)) from None
        return Options(n_best=ask.n_best, domains=domains)

    async def _queue(self, batcher: Batcher, texts: list[str], options: Options,
                     deadline: float) -> list[Translation]:
        try:
            future = batcher.submit(texts, options, deadline - time.monotonic())
        except (QueueFull, Unavailable) as err:
            raise RequestError(503, str(err), {"Retry-After": RETRY_AFTER}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          max(0.0, deadline - time.monotonic()))
        except (TimeoutError, Expired):
            raise self._late() from None
        except Unavailable as err:  # the worker died with the job; a new one is starting
            raise RequestError(503, str(err), {"Retry-After": RETRY_AFTER}) from None
        except TranslationFailed as err:
            raise RequestError(500, f"translation failed: {err}") from None
