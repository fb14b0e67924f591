"""The queue between many requests and the one thread that owns the model.

Batched decoding is many times faster per sentence than one sentence at a time, and a model
(its oneDNN primitives, the translator's shortlist cache) is not meant to be driven from
several threads at once. So requests never decode themselves: each one becomes a :class:`Job`
on a queue, and one worker thread

1. takes the first waiting job and gathers more for up to ``max_wait_ms`` (jobs already
   waiting join at once), up to one of the translator's batches (``batch_size`` sentences)
   and ``max_batch_tokens`` source pieces: gathering more would only add a second, partly
   filled batch of mixed lengths to the call, which cost throughput (docs/serve.md);
2. drops the jobs whose request has outlived its deadline or whose client stopped waiting
   (their sentences leave the batch before any work is spent on them);
3. translates the rest with one :meth:`Translator.translate` call per set of options - which
   does the length sorting, the token-bounded batches and the long-input splitting, exactly as
   for ``infer`` - and hands each job its own results, in its order.

Under load, requests arriving while a batch decodes are all waiting when it ends, so batches
grow with the load by themselves; on an idle server a request waits ``max_wait_ms`` at most.
The handlers wait on a :class:`concurrent.futures.Future`, so the event loop never decodes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from translate.errors import TranslateError
from translate.inference.translator import Translator
from translate.serve.limits import Limits
from translate.serve.prometheus import Metrics

__all__ = ["Batcher", "Expired", "Job", "Options", "QueueFull", "Unavailable"]

log = logging.getLogger("translate.serve")

# Sentences translated once before the service reports ready: the first calls of a fresh
# process pay for oneDNN's primitive creation and the allocator's first pages.
WARMUP = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee auf einer großen Wiese.",
          "Hallo", "Eine Frau mit einem roten Hut liest ein Buch, während ein Kind neben ihr "
          "auf einer Bank sitzt und ein Eis isst."]


class QueueFull(TranslateError):
    """More sentences are waiting than ``max_queue`` allows."""


class Unavailable(TranslateError):
    """The service is warming up or shutting down."""


class Expired(TranslateError):
    """The job's request outlived its deadline before the worker reached it."""


@dataclass(frozen=True)
class Options:
    """What must be equal for two jobs to share one call of the translator."""

    n_best: int = 1
    domains: tuple[str, ...] | None = None  # None: the tagger's prediction


@dataclass(eq=False)
class Job:
    texts: list[str]
    options: Options
    deadline: float  # time.monotonic()
    future: Future = field(default_factory=Future)
    tokens: int | None = None  # source pieces, once counted


_STOP = object()


class Batcher:
    """One worker thread owning ``translator``; :meth:`submit` from any thread."""

    def __init__(self, translator: Translator, limits: Limits, metrics: Metrics,
                 translate_options: dict | None = None,
                 warmup: Sequence[str] = WARMUP) -> None:
        self.translator = translator
        self.limits = limits
        self.metrics = metrics
        self.translate_options = dict(translate_options or {})
        self.warmup = list(warmup)
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.on_failure = lambda: None  # called in the worker if warming up fails
        self._queue: queue.Queue = queue.Queue()
        self._carry: Job | None = None  # taken from the queue, left for the next batch
        self.batch_size = translator.options(**self.translate_options).batch_size
        self._lock = threading.Lock()
        self._queued = 0  # sentences submitted and not yet taken by the worker
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="translate-worker", daemon=True)
        self.batches = 0
        self.translated = 0

    # ------------------------------------------------------------------ callers' side

    def start(self) -> None:
        self._thread.start()

    def submit(self, texts: list[str], options: Options, timeout: float) -> Future:
        """Queue ``texts``; the future's result is their translations, in order."""
        with self._lock:
            if self._closing:
                raise Unavailable("the service is shutting down")
            if not self.ready.is_set():
                raise Unavailable("the model is still warming up")
            if self._queued + len(texts) > self.limits.max_queue:
                raise QueueFull(f"the queue is full ({self._queued} sentences waiting, "
                                f"limit {self.limits.max_queue}: --max-queue)")
            self._queued += len(texts)
            self.metrics.queue_depth.set(self._queued)
        job = Job(list(texts), options, time.monotonic() + timeout)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop taking jobs, finish every queued one, then stop the worker."""
        with self._lock:
            self._closing = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join()

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        try:
            started = time.perf_counter()
            self.translator.translate(self.warmup, **self.translate_options)
            log.info("warmed up in %.1f s", time.perf_counter() - started)
        except Exception as err:  # a model that cannot translate is reported, not served
            log.exception("warm-up failed")
            self.failed = err
            self.on_failure()
            return
        self.ready.set()
        self.metrics.ready.set(1)
        stopping = False
        while not stopping:
            jobs, stopping = self._gather()
            if jobs:
                self._serve(jobs)
        self.metrics.ready.set(0)

    def _gather(self) -> tuple[list[Job], bool]:
        """The next jobs to decode together, and whether the stop mark was reached.

        At most one of the translator's batches (``batch_size`` sentences) and
        ``max_batch_tokens`` source pieces, unless the first job alone is larger: a job that
        does not fit waits for the next call instead of becoming a small batch of its own.
        """
        first, self._carry = self._carry or self._queue.get(), None
        if first is _STOP:
            return [], True
        jobs = [first]
        sentences, tokens = len(first.texts), self._tokens(first)
        end = time.monotonic() + self.limits.max_wait_ms / 1000
        stopping = False
        while sentences < self.batch_size and tokens < self.limits.max_batch_tokens:
            remaining = end - time.monotonic()
            try:  # what is already waiting joins without waiting
                job = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                stopping = True
                break
            size = self._tokens(job)
            if (sentences + len(job.texts) > self.batch_size
                    or tokens + size > self.limits.max_batch_tokens):
                self._carry = job
                break
            jobs.append(job)
            sentences += len(job.texts)
            tokens += size
        with self._lock:
            self._queued -= sum(len(j.texts) for j in jobs)
            self.metrics.queue_depth.set(self._queued)
        return jobs, stopping

    def _tokens(self, job: Job) -> int:
        """Source pieces of ``job`` (counted once; the translator encodes again, which
        costs microseconds against the milliseconds of decoding)."""
        if job.tokens is None:
            todo = [t for t in job.texts if t.strip()]
            job.tokens = sum(len(ids) for ids in self.translator.tokenizer.encode_src(todo)
                             ) if todo else 0
        return job.tokens

    def _serve(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        live: list[Job] = []
        for job in jobs:
            # set_running_or_notify_cancel: False when the handler has stopped waiting.
            if now > job.deadline or not job.future.set_running_or_notify_cancel():
                self.metrics.expired.inc(len(job.texts))
                if not job.future.done():
                    job.future.set_exception(Expired())
                continue
            live.append(job)
        groups: dict[Options, list[Job]] = {}
        for job in live:
            groups.setdefault(job.options, []).append(job)
        for options, group in groups.items():
            self._translate(options, group)

    def _translate(self, options: Options, jobs: list[Job]) -> None:
        texts = [t for job in jobs for t in job.texts]
        started = time.perf_counter()
        try:
            results = self.translator.translate(
                texts, n_best=options.n_best,
                domains=list(options.domains) if options.domains is not None else None,
                **self.translate_options)
        except Exception as err:  # never a dead worker: each job gets the error
            log.exception("translating a batch of %d sentences failed", len(texts))
            for job in jobs:
                job.future.set_exception(err)
            return
        seconds = time.perf_counter() - started
        self.metrics.batch_sentences.observe(len(texts))
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.sentences.inc(len(texts))
        self.batches += 1
        self.translated += len(texts)
        log.debug("batch: %d sentences from %d requests in %.0f ms", len(texts), len(jobs),
                  seconds * 1000)
        start = 0
        for job in jobs:
            job.future.set_result(results[start:start + len(job.texts)])
            start += len(job.texts)

