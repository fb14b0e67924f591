"""The loop that owns a model: requests' sentences in, one running batch, translations out.

The :class:`~translate.serve.batcher.Batcher` runs this loop in a thread or in a process of
its own; either way it sees the same messages. Each request is cut into the model's inputs as
``Translator.translate`` cuts them (empty lines answered without the model, long ones split
into pieces that fit), and the pieces queue for one :class:`~translate.search.continuous.
ContinuousSearch`. Before every decoding step the waiting pieces join the running batch, up to
``max_sentences`` sentences and ``max_pieces`` source pieces (one waiting piece always joins
an empty batch, however long); after it, each request whose last piece finished is answered.
So the batch stays full under load, a short sentence never waits for a long one to end, and
an idle service starts decoding a request as soon as it arrives.

Each sentence is decoded as ``Translator.translate`` decodes it alone (with the shortlist
when the translator has one on: each sentence over its own; :mod:`translate.search.continuous`
says how exactly), and the answer has the fields that call gives: n-best, domain tags,
conditioning, warnings for split inputs, and the attention for a request that asks (an
HTML document's segments: their inline tags are placed by it).
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence

import torch

from translate.errors import TranslateError
from translate.inference.translator import Translator
from translate.search.continuous import ContinuousSearch, Finished, Sentence
from translate.serve.tasks import Options, Reply, Request, Task, Update

__all__ = ["Worker", "receiver", "run_loop"]

log = logging.getLogger("translate.serve")

STATS_EVERY = 0.25  # seconds between updates that carry only step statistics
# Steps waiting sentences may wait to join a running batch as a group: a newcomer's encoder
# call costs about as much for one sentence as for sixteen, so under load fewer, larger
# groups decode more (docs/serve.md#measured: 16 against 4 steps, 32 connections).
ADMIT_STEPS = 16


class Worker:
    """A translator's running batch and the requests it serves (one thread drives it)."""

    def __init__(self, translator: Translator, translate_options: dict | None = None,
                 max_sentences: int | None = None, max_pieces: int = 4096,
                 admit_steps: int = ADMIT_STEPS) -> None:
        self.translator = translator
        self.opts = translator.options(**dict(translate_options or {}))
        self.max_sentences = max_sentences or self.opts.batch_size
        self.max_pieces = max_pieces
        self.admit_steps = admit_steps
        self._waiting_since = 0  # the step since which pieces wait
        self.shortlist = translator._shortlist(self.opts)  # None: the whole vocabulary
        self.search = self._new_search()
        self.conditioned = bool(getattr(translator.model, "conditioned", False))
        self._tasks: dict[int, Task] = {}
        self._waiting: deque[tuple[Task, int]] = deque()  # pieces not yet in the batch
        self._update = Update()
        self._since = time.monotonic()  # when the last update was taken
        self._steps = 0  # decoding steps so far

    @property
    def idle(self) -> bool:
        """Nothing to decode: no request waiting or in the batch."""
        return not self._tasks

    # ------------------------------------------------------------------ requests

    def put(self, request: Request) -> None:
        """Queue ``request``'s pieces (a request without any is answered at once)."""
        try:
            task = Task.prepare(self.translator, request, self.conditioned,
                                "vocabulary" if self.shortlist is None else "shortlist")
        except TranslateError as err:  # the service checks options first; never a dead loop
            self._update.replies.append(Reply(request.id, failed=str(err)))
            return
        self._tasks[request.id] = task
        if task.left == 0:
            self._finish(task)
            return
        if not self._waiting:
            self._waiting_since = self._steps
        self._waiting.extend((task, i) for i in range(len(task.segments)))

    def cancel(self, request_id: int) -> None:
        """Stop decoding a request whose client left; it is answered as expired."""
        task = self._tasks.get(request_id)
        if task is not None:
            self._drop(task)

    def _drop(self, task: Task) -> None:
        task.dead = True
        del self._tasks[task.request.id]
        self.search.drop(lambda key: key[0] is task)
        self._update.replies.append(Reply(task.request.id, expired=True))

    # ------------------------------------------------------------------ the loop

    def step(self) -> Update:
        """Drop expired requests, let waiting pieces join, decode one step; what happened."""
        now = time.monotonic()
        for task in [t for t in self._tasks.values() if t.request.deadline < now]:
            self._drop(task)
        self._admit()
        if len(self.search):
            started = time.perf_counter()
            size = len(self.search)
            finished = self.search.step()
            self._steps += 1
            self._update.steps.append((size, time.perf_counter() - started))
            for done in finished:
                self._done(done)
        return self.take_update()

    def take_update(self, every: float = STATS_EVERY) -> Update:
        """What happened since the last update: at once when requests started or were
        answered, else (only step statistics) once ``every`` seconds, so that a long
        decode does not wake the owner at every step."""
        update = self._update
        if not (update.taken or update.replies) and (
                not update.steps or time.monotonic() - self._since < every):
            return Update()
        self._update, self._since = Update(), time.monotonic()
        return update

    def _admit(self) -> None:
        """Waiting pieces, oldest first, into the batch while it has room: at once into an
        empty batch, else in groups (when they would fill it, or once the oldest has waited
        ``admit_steps`` steps), since encoding a few sentences costs almost as much as
        encoding many (the encoder's LSTM has a fixed cost per call and per new shape)."""
        room = self.max_sentences - len(self.search)
        if not self._waiting or (len(self.search) and len(self._waiting) < room
                                 and self._steps - self._waiting_since < self.admit_steps):
            return
        now = time.monotonic()
        pieces = self.search.pieces
        group: list[Sentence] = []
        while self._waiting and len(group) < room:
            task, i = self._waiting[0]
            if task.dead:
                self._waiting.popleft()
                continue
            size = len(task.segments[i])
            if pieces + size > self.max_pieces and (group or len(self.search)):
                break
            self._waiting.popleft()
            options = task.request.options
            group.append(Sentence((task, i), task.segments[i], options.n_best, task.choice,
                                  attention=options.attention))
            pieces += size
            if not task.taken:
                task.taken, task.started, task.first_step = True, now, self._steps
                self._update.taken.append(task.request.id)
        self.search.add(group)
        self._waiting_since = self._steps

    def _done(self, done: Finished) -> None:
        task, i = done.key
        task.hypotheses[i] = done.hypotheses
        task.probs[i], task.mixes[i] = done.domain_probs, done.domain_weights
        task.left -= 1
        if task.left == 0:
            del self._tasks[task.request.id]
            self._finish(task)

    def _finish(self, task: Task) -> None:
        started = task.started or time.monotonic()
        self._update.replies.append(Reply(task.request.id, task.translations(self.translator),
                                          started=started, finished=time.monotonic(),
                                          steps=self._steps - task.first_step))

    def warm_up(self, texts: Sequence[str]) -> None:
        """Translate ``texts`` once and forget them: the first steps of a fresh process pay
        for oneDNN's primitive creation and the allocator's first pages."""
        self.put(Request(-1, list(texts), Options(), float("inf")))
        updates = [self.step()]
        while not self.idle:
            updates.append(self.step())
        failed = [r.failed for u in updates for r in u.replies if r.failed]
        if failed:
            raise TranslateError(failed[0])

    def fail_running(self, error: BaseException) -> Update:
        """After a step raised: the requests in the batch are answered ``failed`` and the
        batch starts afresh; the waiting ones stay queued (never a dead worker)."""
        log.error("decoding failed; answering the %d sentences in the batch with the error",
                  len(self.search), exc_info=error)
        message = f"decoding failed: {type(error).__name__}: {error}"
        for task in [t for t in self._tasks.values() if t.taken]:
            task.dead = True
            del self._tasks[task.request.id]
            self._update.replies.append(Reply(task.request.id, failed=message))
        self.search = self._new_search()
        return self.take_update(0.0)

    def _new_search(self) -> ContinuousSearch:
        t = self.translator
        return ContinuousSearch(t.model, self.opts, t.special, t.device, t.dtype,
                                self.shortlist, t.tokenizer.tgt_vocab_size)


Receive = Callable[[bool], Sequence[tuple]]


def receiver(inbox: queue.Queue) -> Receive:
    """``receive`` for :func:`run_loop` from a queue (the worker in a thread)."""
    def receive(block: bool) -> list[tuple]:
        messages = [inbox.get()] if block else []
        while True:
            try:
                messages.append(inbox.get_nowait())
            except queue.Empty:
                return messages
    return receive


def run_loop(worker: Worker, receive: Receive, send: Callable[[Update], None]) -> None:
    """Drive ``worker`` until told to stop and every request is answered.

    ``receive(block)``: the messages that arrived (waiting for one when ``block``):
    ``("request", Request)``, ``("cancel", id)``, ``("threads", n)`` (decode on ``n`` torch
    threads from the next step) or ``("stop",)``; ``send(update)`` after each step that
    changed anything.
    """
    stopping = False
    while not (stopping and worker.idle):
        for message in receive(worker.idle and not stopping):
            if message[0] == "request":
                worker.put(message[1])
            elif message[0] == "cancel":
                worker.cancel(message[1])
            elif message[0] == "threads":
                torch.set_num_threads(message[1])
            elif message[0] == "stop":
                stopping = True
        try:
            update = worker.step()
        except Exception as err:  # a bug or a resource error: answered, never a dead loop
            update = worker.fail_running(err)
        if update:
            send(update)
    final = worker.take_update(0.0)  # the last steps' statistics
    if final:
        send(final)
