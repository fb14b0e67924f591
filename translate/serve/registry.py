"""The models a service serves: their pairs, the pivots between them, loading and unloading.

Each model is one run directory (or an ensemble of them) translating one pair. The registry
knows every model's pair from its ``config.yaml`` without loading it, so ``/languages``
answers at once and a model loads only when it is first asked for (or at start with
``--preload``). Each loaded model has its own :class:`Batcher` and worker. With
``--max-loaded N`` at most N models are loaded at a time: to load another, the one used
least recently is unloaded - never one with a request in flight; if all are busy, the load
waits for one to finish (within the request's deadline).

Where no model translates ``a`` to ``b`` but two chain through one shared language ``c``
(``a→c`` and ``c→b``), the pair is served by translating twice, as LibreTranslate pivots
through English. English is the pivot when it can be, else the first shared language in
alphabetical order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from translate import config as config_mod
from translate.serve.batcher import Batcher
from translate.serve.limits import RequestError
from translate.serve.prometheus import Metrics, ModelMetrics
from translate.serve.specs import ModelSpec

__all__ = ["Model", "Registry", "Route"]

log = logging.getLogger("translate.serve")
RETRY_AFTER = "1"  # seconds; a full queue drains in about a batch's time
PIVOT_FIRST = "en"


@dataclass(eq=False)
class Model:
    """One served model; ``batcher`` (and its translator) only while loaded."""

    spec: ModelSpec
    batcher: Batcher | None = None
    in_flight: int = 0
    last_used: float = 0.0
    loading: asyncio.Task | None = None
    preloaded: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> str:
        if self.loading is not None:
            return "loading"
        if self.batcher is None:
            return "unloaded"
        if self.batcher.failed is not None:
            return "failed"
        return "ready" if self.batcher.ready.is_set() else "warming up"


@dataclass(frozen=True)
class Route:
    """How one pair is translated: one model, or two through ``pivot``."""

    source: str
    target: str
    models: tuple[Model, ...] = field(default=())

    @property
    def pivot(self) -> str | None:
        return self.models[0].spec.target if len(self.models) > 1 else None

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.models)


Loader = Callable[[ModelSpec, ModelMetrics], Batcher]


class Registry:
    """The models, the routes between languages, and which models are loaded.

    ``load`` builds a model's batcher (loading its translator) in a worker thread; the
    registry starts it, waits for its warm-up, and closes it to unload the model.
    """

    def __init__(self, specs: Sequence[ModelSpec], load: Loader, metrics: Metrics,
                 max_loaded: int = 0) -> None:
        names = [s.name for s in specs]
        for name in names:
            if names.count(name) > 1:
                raise config_mod.ConfigError(f"--model: two models are named {name!r}; give "
                                             "each run directory its own name")
        self.models = {s.name: Model(s) for s in specs}
        self.load = load
        self.metrics = metrics
        self.max_loaded = max_loaded  # 0: no bound
        self.routes = _routes(list(self.models.values()))
        self._lock = asyncio.Lock()  # one load or unload decision at a time
        self._idle = asyncio.Event()  # set when a model's last request finishes

    # ------------------------------------------------------------------ languages

    @property
    def sources(self) -> list[str]:
        return sorted({m.spec.source for m in self.models.values()})

    @property
    def languages(self) -> list[str]:
        return sorted({c for m in self.models.values() for c in (m.spec.source,
                                                                  m.spec.target)})

    def targets(self, source: str) -> list[str]:
        return sorted(t for s, t in self.routes if s == source)

    def route(self, source: str, target: str) -> Route:
        """The route for a pair, or a 400 naming what is served."""
        found = self.routes.get((source, target))
        if found is not None:
            return found
        targets = self.targets(source)
        if not targets:
            raise RequestError(400, f"source: {source!r} is not served; this service "
                                    f"translates from {', '.join(self.sources)} "
                                    "(see GET /languages)")
        raise RequestError(400, f"target: {source} to {target} is not served; from {source} "
                                f"this service translates to {', '.join(targets)} "
                                "(see GET /languages)")

    def named(self, name: str) -> Route:
        model = self.models.get(name)
        if model is None:
            raise RequestError(400, f"model: {name!r} is not served; the models are "
                                    f"{', '.join(self.models)}")
        return Route(model.spec.source, model.spec.target, (model,))

    # ------------------------------------------------------------------ loading

    def preload(self, names: Sequence[str]) -> None:
        """Load ``names`` now, before serving (a model that cannot load fails the start);
        :meth:`start` starts their workers."""
        if self.max_loaded and len(names) > self.max_loaded:
            raise config_mod.ConfigError(f"--preload: {len(names)} models do not fit "
                                         f"--max-loaded {self.max_loaded}")
        for name in names:
            model = self.models[name]
            model.batcher = self.load(model.spec, self.metrics.model(name))
            model.preloaded = True
            self.metrics.model(name).loads.inc()

    def start(self) -> None:
        for model in self.models.values():
            if model.batcher is not None:
                model.batcher.start()

    def ready(self) -> bool:
        """Every preloaded model is warm (models loaded on use do not count)."""
        return all(m.batcher.ready.is_set() and not m.batcher._closing
                   for m in self.models.values() if m.preloaded and m.batcher is not None)

    def failed(self) -> BaseException | None:
        return next((m.batcher.failed for m in self.models.values()
                     if m.preloaded and m.batcher is not None and m.batcher.failed), None)

    def close(self) -> None:
        """Stop every worker; each finishes its queued sentences first."""
        for model in self.models.values():
            if model.batcher is not None:
                model.batcher.close()

    @asynccontextmanager
    async def use(self, model: Model, deadline: float) -> AsyncIterator[Batcher]:
        """``model``'s warm batcher, loading it if needed; it is not unloaded meanwhile."""
        model.in_flight += 1
        try:
            if model.batcher is None or model.loading is not None:
                await self._ensure(model, deadline)
            assert model.batcher is not None
            if model.batcher.failed is not None:
                raise RequestError(503, f"model {model.name} failed to warm up: "
                                        f"{model.batcher.failed}")
            yield model.batcher
        finally:
            model.in_flight -= 1
            model.last_used = time.monotonic()
            if model.in_flight == 0:
                self._idle.set()

    async def _ensure(self, model: Model, deadline: float) -> None:
        # A model already loading is waited for without the lock: whoever holds it may be
        # waiting for this model's requests to finish, to unload it.
        if model.loading is None:
            await self._start_loading(model, deadline)
        task = model.loading
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise RequestError(503, f"model {model.name} is still loading; retry shortly",
                               {"Retry-After": RETRY_AFTER}) from None

    async def _start_loading(self, model: Model, deadline: float) -> None:
        async with self._lock:
            if model.batcher is None and model.loading is None:
                await self._make_room(deadline)
                model.loading = asyncio.create_task(self._load(model))
                # Retrieved here too, so that a load nobody waits for any more logs once.
                model.loading.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _load(self, model: Model) -> None:
        started = time.monotonic()
        metrics = self.metrics.model(model.name)
        try:
            batcher = await asyncio.to_thread(self.load, model.spec, metrics)
            batcher.start()
            await asyncio.to_thread(_wait_warm, batcher)
        except Exception as err:
            log.exception("loading %s failed", model.name)
            raise RequestError(503, f"model {model.name} could not be loaded: {err}") from None
        finally:
            model.loading = None
        if batcher.failed is not None:
            await asyncio.to_thread(batcher.close)
            raise RequestError(503, f"model {model.name} failed to warm up: {batcher.failed}")
        model.batcher = batcher
        metrics.loads.inc()
        metrics.load_seconds.observe(time.monotonic() - started)
        log.info("loaded %s (%s to %s) in %.1f s", model.name, model.spec.source,
                 model.spec.target, time.monotonic() - started)

    def _loaded(self) -> list[Model]:
        return [m for m in self.models.values()
                if m.batcher is not None or m.loading is not None]

    async def _make_room(self, deadline: float) -> None:
        """Unload least recently used idle models until one more fits ``max_loaded``."""
        while self.max_loaded and len(self._loaded()) >= self.max_loaded:
            idle = [m for m in self._loaded() if m.in_flight == 0 and m.loading is None]
            if idle:
                victim = min(idle, key=lambda m: m.last_used)
                batcher, victim.batcher = victim.batcher, None
                log.info("unloading %s to make room (--max-loaded %d)", victim.name,
                         self.max_loaded)
                if batcher is not None:
                    self.metrics.model(victim.name).unloads.inc()
                    await asyncio.to_thread(batcher.close)
                continue
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(),
                                       max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RequestError(503, f"all {self.max_loaded} loaded models are busy "
                                        f"(--max-loaded {self.max_loaded}); retry shortly",
                                   {"Retry-After": RETRY_AFTER}) from None


def _wait_warm(batcher: Batcher) -> None:
    while not batcher.ready.wait(0.05):
        if batcher.failed is not None:
            return


def _routes(models: list[Model]) -> dict[tuple[str, str], Route]:
    """Direct routes (the first model given for a pair), then pivots through one language."""
    routes: dict[tuple[str, str], Route] = {}
    for m in models:
        routes.setdefault((m.spec.source, m.spec.target), Route(m.spec.source, m.spec.target,
                                                                (m,)))
    direct = dict(routes)
    languages = sorted({c for pair in direct for c in pair})
    for a in languages:
        for b in languages:
            if a == b or (a, b) in direct:
                continue
            via = [c for c in languages if (a, c) in direct and (c, b) in direct]
            if via:
                c = PIVOT_FIRST if PIVOT_FIRST in via else via[0]
                routes[(a, b)] = Route(a, b, (direct[(a, c)].models[0],
                                              direct[(c, b)].models[0]))
    return routes
