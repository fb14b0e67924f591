"""Prometheus metrics of the service, in a registry of its own, and the middleware that
counts and times the requests.

prometheus_client is the standard client library and gives the text format, histograms and
thread-safe counters for free. A registry per service (not the library's global one) lets a
process, e.g. a test, run several services without their metrics mixing or colliding.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Accounting", "Metrics", "ModelMetrics"]

log = logging.getLogger("translate.serve")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's counters, gauges and histograms (names prefixed ``translate_``).

    What a model's worker records is labelled by the model's name; :meth:`model` gives one
    model's children under the names the batcher uses.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("translate_requests", "HTTP translation requests answered",
                                ["api", "status"], registry=r)
        self.in_flight = Gauge("translate_requests_in_flight",
                               "Translation requests received and not yet answered",
                               registry=r)
        self.latency = Histogram("translate_request_seconds",
                                 "Seconds from a translation request's arrival to its answer",
                                 ["api"], buckets=_LATENCY_BUCKETS, registry=r)
        self.sentences = Counter("translate_sentences", "Sentences translated", ["model"],
                                 registry=r)
        self.expired = Counter("translate_expired_sentences",
                               "Sentences dropped from a batch because their request had "
                               "outlived its deadline or its client had gone", ["model"],
                               registry=r)
        self.queue_depth = Gauge("translate_queue_depth",
                                 "Sentences waiting for the model's worker", ["model"],
                                 registry=r)
        self.batch_sentences = Histogram("translate_batch_sentences",
                                         "Sentences per call of the translator", ["model"],
                                         buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("translate_batch_seconds",
                                       "Seconds per call of the translator", ["model"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.ready = Gauge("translate_ready", "1 while the model is loaded and warmed up",
                           ["model"], registry=r)
        self.loads = Counter("translate_model_loads", "Times the model was loaded", ["model"],
                             registry=r)
        self.unloads = Counter("translate_model_unloads",
                               "Times the model was unloaded to make room (--max-loaded)",
                               ["model"], registry=r)
        self.load_seconds = Histogram("translate_model_load_seconds",
                                      "Seconds to load and warm up the model", ["model"],
                                      buckets=_LATENCY_BUCKETS, registry=r)

    def model(self, name: str) -> ModelMetrics:
        """The children of one model's metrics, for its batcher."""
        return ModelMetrics(*(getattr(self, f).labels(name) for f in ModelMetrics.FIELDS))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One model's metrics, under the attribute names of :class:`Metrics`."""

    FIELDS = ("sentences", "expired", "queue_depth", "batch_sentences", "batch_seconds",
              "ready", "loads", "unloads", "load_seconds")

    def __init__(self, *children) -> None:
        for name, child in zip(self.FIELDS, children, strict=True):
            setattr(self, name, child)


class Accounting:
    """ASGI middleware: the request's arrival time (its deadline counts from there), the
    request counter and latency histogram, and one debug line per request. Plain ASGI rather
    than ``@app.middleware``, which would copy every request and response through a stream."""

    APIS = {"/translate": "libretranslate", "/v1/translate": "v1", "/detect": "detect",
            "/translate_file": "file"}

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        scope.setdefault("state", {})["arrived"] = started
        status = 500
        api = self.APIS.get(scope["path"]) if scope["method"] == "POST" else None
        if api is not None:
            self.metrics.in_flight.inc()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.monotonic() - started
            if api is not None:
                self.metrics.in_flight.dec()
                self.metrics.requests.labels(api, str(status)).inc()
                self.metrics.latency.labels(api).observe(seconds)
            log.debug("%s %s %d %.1f ms", scope["method"], scope["path"], status,
                      seconds * 1000)
