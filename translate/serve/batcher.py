"""The queue between many requests and the workers that own a model.

Batched decoding is many times faster per sentence than one sentence at a time, and a model
(its oneDNN primitives, its cached step weights) is not meant to be driven from several
threads at once. So requests never decode themselves: :meth:`Batcher.submit` hands a
request's texts to a worker (:mod:`translate.serve.worker`) and returns a
:class:`~concurrent.futures.Future` of their translations, and the handlers wait on it, so
the event loop never decodes.

Each worker keeps one running batch (continuous batching, :mod:`translate.search.continuous`):
before each decoding step the waiting sentences join it, up to the translator's
``batch_size`` sentences and ``max_batch_tokens`` source pieces, and each request is answered
as soon as its last sentence finishes. Requests that outlive their deadline, or whose client
stops waiting, leave the queue and the batch before more work is spent on them.

The worker runs in a process of its own by default on the CPU (:mod:`translate.serve.process`
says why), in a thread of this process on a GPU or when asked (``process=False``). With
processes there can be several workers (``workers``; by default two when torch has two
threads or more), each with its own running batch: a request goes to the one with the fewest
sentences in hand, and torch's threads are shared between the busy ones (all of them to a
worker busy alone, so one request at a time decodes as fast as with a single worker). Two
batches each on its own core decode more than one batch on both, since the decoding steps
are small products and Python between them that two threads split poorly
(docs/serve.md#measured). A worker that dies is noticed at once: the requests it held are
answered with a :class:`WorkerDied` error (a 5xx) and a new one is started; ``ready`` is
clear while no worker is warm.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from itertools import count

import torch

from translate.errors import TranslateError
from translate.inference.translator import Translator
from translate.serve.limits import Limits
from translate.serve.process import WorkerProcess
from translate.serve.tasks import Options, Reply, Request, Update
from translate.serve.worker import Worker, receiver, run_loop

__all__ = ["Batcher", "Expired", "Options", "QueueFull", "TranslationFailed", "Unavailable",
           "WorkerDied"]

log = logging.getLogger("translate.serve")

# Sentences translated once before the service reports ready: the first calls of a fresh
# process pay for oneDNN's primitive creation and the allocator's first pages.
WARMUP = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee auf einer großen Wiese.",
          "Hallo", "Eine Frau mit einem roten Hut liest ein Buch, während ein Kind neben ihr "
          "auf einer Bank sitzt und ein Eis isst."]


class QueueFull(TranslateError):
    """More sentences are waiting than ``max_queue`` allows."""


class Unavailable(TranslateError):
    """The service is warming up, restarting its worker or shutting down."""


class Expired(TranslateError):
    """The job's request outlived its deadline before the worker was done with it."""


class TranslationFailed(TranslateError):
    """The worker could not translate the job (the message says why)."""


class WorkerDied(Unavailable):
    """The worker process died while it held the job."""


@dataclass(eq=False)
class Job:
    texts: list[str]
    submitted: float  # time.monotonic()
    future: Future = field(default_factory=Future)
    taken: bool = False  # its first sentence has joined the running batch
    child: int = 0  # process mode: the worker that has it


@dataclass(eq=False)
class Child:
    """One worker process, as the batcher sees it."""

    index: int
    handle: WorkerProcess | None = None
    warm: bool = False  # warmed up: it takes requests
    load: int = 0  # sentences sent to it and not answered yet
    answered: int = 0  # sentences it answered, all its lives
    threads: int = 0  # torch threads it was told to use
    started: float = 0.0  # time.perf_counter() at its start
    window: list = field(default_factory=lambda: [time.monotonic(), 0, 0, 0.0])


def default_workers(threads: int) -> int:
    """Worker processes for ``threads`` torch threads: two when there are two threads to
    share (docs/serve.md#measured), else one."""
    return 2 if threads >= 2 else 1


class Batcher:
    """The workers owning ``translator``; :meth:`submit` from any thread.

    ``workers``: worker processes (process mode only; default :func:`default_workers` of
    torch's thread count); ``threads``: torch threads shared among them (default: this
    process's count)."""

    def __init__(self, translator: Translator, limits: Limits, metrics,
                 translate_options: dict | None = None, warmup: Sequence[str] = WARMUP,
                 process: bool | None = None, workers: int | None = None,
                 threads: int | None = None) -> None:
        self.translator = translator
        self.limits = limits
        self.metrics = metrics
        self.translate_options = dict(translate_options or {})
        self.warmup = list(warmup)
        self.process = translator.device.type == "cpu" if process is None else process
        self.batch_size = translator.options(**self.translate_options).batch_size
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.on_failure = lambda: None  # called if warming up fails
        self.batches = 0  # decoding steps
        self.translated = 0
        self.restarts = 0
        self._window = [time.monotonic(), 0, 0, 0.0]  # thread mode's debug line on steps
        self._closing = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._ids = count()
        self._queued = 0  # sentences submitted and not yet taken into the batch
        self._inbox: queue.Queue = queue.Queue()  # thread mode: the worker's messages
        self._thread: threading.Thread | None = None
        self._payload = b""
        if self.process:
            try:
                self._payload = WorkerProcess.payload(translator)
            except (pickle.PicklingError, TypeError, AttributeError) as err:
                log.warning("the model cannot be sent to a worker process (%s); decoding "
                            "in a thread of this process", err)
                self.process = False
        self.threads = threads or torch.get_num_threads()
        if workers and workers > 1 and not self.process:
            log.warning("%d workers asked, but the model decodes in a thread of this process "
                        "(one worker)", workers)
        n_workers = (workers or default_workers(self.threads)) if self.process else 0
        self._children = [Child(i) for i in range(n_workers)]

    # ------------------------------------------------------------------ callers' side

    def start(self) -> None:
        """Start the workers; ``ready`` is set once one has warmed up."""
        if self.process:
            for child in self._children:
                self._spawn(child)
        else:
            self._thread = threading.Thread(target=self._run_thread, name="translate-worker",
                                            daemon=True)
            self._thread.start()

    def submit(self, texts: list[str], options: Options, timeout: float) -> Future:
        """Queue ``texts``; the future's result is their translations, in order."""
        with self._lock:
            if self._closing:
                raise Unavailable("the service is shutting down")
            warm = [c for c in self._children if c.warm]
            if not self.ready.is_set() or (self.process and not warm):
                raise Unavailable("the model is still warming up" if not self.restarts else
                                  "the model's worker is restarting")
            if self._queued + len(texts) > self.limits.max_queue:
                raise QueueFull(f"the queue is full ({self._queued} sentences waiting, "
                                f"limit {self.limits.max_queue}: --max-queue)")
            self._queued += len(texts)
            self.metrics.queue_depth.set(self._queued)
            job_id = next(self._ids)
            job = self._jobs[job_id] = Job(list(texts), time.monotonic())
            if self.process:
                child = min(warm, key=lambda c: c.load)
                job.child, child.load = child.index, child.load + len(texts)
                self._share_threads()
            # Under the lock: a worker that dies meanwhile answers it (see _exited).
            self._send(("request", Request(job_id, job.texts, options,
                                           time.monotonic() + timeout)), job.child)
        job.future.add_done_callback(
            lambda f: f.cancelled() and self._send(("cancel", job_id), job.child))
        return job.future

    def close(self) -> None:
        """Stop taking jobs, finish every queued one, then stop the workers."""
        with self._lock:
            self._closing = True
        for i in range(max(1, len(self._children))):
            self._send(("stop",), i)
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        if self._children:
            self._stopped.wait()
        self.metrics.ready.set(0)

    def _send(self, message: tuple, child: int = 0) -> None:
        if self.process:
            handle = self._children[child].handle
            if handle is not None:
                handle.send(message)
        else:
            self._inbox.put(message)

    @property
    def _share(self) -> int:
        """Each worker's threads while several are busy."""
        return max(1, self.threads // len(self._children))

    def _share_threads(self) -> None:
        """Torch's threads among the workers (under the lock): all of them to a worker busy
        alone, an equal share each while several are busy; kept as they are while none is
        (so one request after another keeps one worker on all threads). Each worker is told
        only when its count changes."""
        busy = [c for c in self._children if c.load]
        if not busy:
            return
        for child in self._children:
            want = self.threads if busy == [child] else self._share
            if child.handle is not None and child.threads != want:
                child.threads = want
                child.handle.send(("threads", want))

    # ------------------------------------------------------------------ thread mode

    def _run_thread(self) -> None:
        try:
            worker = Worker(self.translator, self.translate_options, self.batch_size,
                            self.limits.max_batch_tokens)
            started = time.perf_counter()
            worker.warm_up(self.warmup)
            log.info("warmed up in %.1f s", time.perf_counter() - started)
        except Exception as err:  # a model that cannot translate is reported, not served
            log.exception("warm-up failed")
            self._failed(err)
            return
        self._ready()
        run_loop(worker, receiver(self._inbox), self._update)

    # ------------------------------------------------------------------ process mode

    def _spawn(self, child: Child) -> None:
        """Start ``child``'s process: the first worker, which one request at a time goes to,
        with all the threads (unless another is busy), the others with their share."""
        threads = self._share
        if child.index == 0 and not any(c.load for c in self._children):
            threads = self.threads
        child.warm, child.load, child.threads = False, 0, threads
        child.handle = WorkerProcess(
            self._payload, self.translate_options, self.batch_size,
            self.limits.max_batch_tokens, threads, self.warmup,
            lambda message: self._message(child, message),
            lambda code: self._exited(child, code),
            name=f"translate-worker-{child.index}")
        child.started = time.perf_counter()
        child.handle.start()

    def _message(self, child: Child, message: tuple) -> None:
        kind = message[0]
        if kind == "update":
            self._update(message[1], child)
        elif kind == "ready":
            log.info("worker process %d warmed up in %.1f s", child.handle.pid,
                     time.perf_counter() - child.started)
            with self._lock:
                child.warm = True
            self._ready()
        elif kind == "failed":
            log.error("warm-up failed: %s", message[1])
            self._failed(RuntimeError(message[1]))

    def _exited(self, child: Child, code: int | None) -> None:
        """A child is gone: after ``stop``, or after a crash (then another is started, under
        the lock, so that a ``close`` meanwhile reaches it)."""
        with self._lock:
            served = child.warm
            child.warm, child.load, child.handle = False, 0, None
            if not any(c.warm for c in self._children):
                self.ready.clear()
                self.metrics.ready.set(0)
            jobs = [j for j in self._jobs.values() if j.child == child.index]
            self._jobs = {i: j for i, j in self._jobs.items() if j.child != child.index}
            self._queued -= sum(len(j.texts) for j in jobs if not j.taken)
            self.metrics.queue_depth.set(self._queued)
            running = not self._closing and self.failed is None
            if running and served:
                self.restarts += 1
                self._spawn(child)
            stopped = all(c.handle is None for c in self._children)
        died = WorkerDied(f"the model's worker process died (exit code {code}) while "
                          "translating this request")
        for job in jobs:
            _set(job.future, exception=died)
        if running and served:
            log.error("the worker process died (exit code %s) with %d requests; %d answered "
                      "with an error; starting a new one", code, len(jobs), len(jobs))
        elif running:  # it never served: another would die the same way
            log.error("the worker process died while warming up (exit code %s)", code)
            self._failed(WorkerDied(f"the worker process died while warming up (exit code "
                                    f"{code})"))
        if stopped:
            self._stopped.set()

    # ------------------------------------------------------------------ both modes

    def _ready(self) -> None:
        self.ready.set()
        self.metrics.ready.set(1)

    def _failed(self, err: BaseException) -> None:
        self.failed = err
        self.on_failure()

    def _update(self, update: Update, child: Child | None = None) -> None:
        """Apply what a worker did: queue accounting, answers, metrics, log lines."""
        for size, seconds in update.steps:
            self.metrics.batch_sentences.observe(size)
            self.metrics.batch_seconds.observe(seconds)
        self.batches += len(update.steps)
        if update.steps and log.isEnabledFor(logging.DEBUG):
            self._log_steps(update.steps, self._window if child is None else child.window,
                            "" if child is None else f"worker {child.index}: ")
        with self._lock:
            for job_id in update.taken:
                job = self._jobs.get(job_id)
                if job is not None and not job.taken:
                    job.taken = True
                    self._queued -= len(job.texts)
            answered = []
            for reply in update.replies:
                job = self._jobs.pop(reply.id, None)
                if job is not None:
                    if not job.taken:
                        self._queued -= len(job.texts)
                    if child is not None:
                        child.load -= len(job.texts)
                        child.answered += len(job.texts)
                    answered.append((job, reply))
            self.metrics.queue_depth.set(self._queued)
            if child is not None and answered:
                self._share_threads()
        for job, reply in answered:
            self._answer(job, reply)

    @staticmethod
    def _log_steps(steps: list[tuple[int, float]], window: list, who: str) -> None:
        """One debug line a second per worker while it decodes: steps, their batch size and
        time."""
        window[1] += len(steps)
        window[2] += sum(size for size, _ in steps)
        window[3] += sum(seconds for _, seconds in steps)
        elapsed = time.monotonic() - window[0]
        if elapsed >= 1.0:
            log.debug("%sdecoding: %d steps in %.1f s, %.1f sentences a step, %.2f ms a step "
                      "(%.0f%% of the time)", who, window[1], elapsed, window[2] / window[1],
                      window[3] * 1000 / window[1], 100 * window[3] / elapsed)
            window[:] = [time.monotonic(), 0, 0, 0.0]

    def _answer(self, job: Job, reply: Reply) -> None:
        n = len(job.texts)
        if reply.results is not None:
            self.metrics.sentences.inc(n)
            self.translated += n
            _set(job.future, result=reply.results)
            if log.isEnabledFor(logging.DEBUG):
                now = time.monotonic()
                log.debug("request of %d sentence(s): queued %.1f ms, decoded %.1f ms in %d "
                          "steps, handed back %.1f ms", n,
                          (reply.started - job.submitted) * 1000,
                          (reply.finished - reply.started) * 1000, reply.steps,
                          (now - reply.finished) * 1000)
        elif reply.expired:
            self.metrics.expired.inc(n)
            _set(job.future, exception=Expired())
        else:
            _set(job.future, exception=TranslationFailed(reply.failed))


def _set(future: Future, result=None, exception: BaseException | None = None) -> None:
    """Resolve ``future`` unless its waiter has cancelled it meanwhile."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
