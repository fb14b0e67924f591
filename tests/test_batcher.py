"""The service's batcher: continuous batching in a worker process (or thread), real model.

Requests are submitted from many threads at once, as the service's handlers submit them;
every answer is checked against ``Translator.translate`` of the same texts alone with the
shortlist off. The worker process is a real child process: it is killed for real.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from translate.inference.translator import Translator
from translate.serve.batcher import Batcher, Expired, Options, WorkerDied
from translate.serve.limits import Limits
from translate.serve.prometheus import Metrics

pytest.importorskip("prometheus_client")


# One torch thread; the worker process takes the parent's count.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return Translator.load(trained_run, shortlist=False)


@pytest.fixture(scope="module")
def sources(multi30k: Path) -> list[str]:
    return (multi30k / "test_2016_flickr.de").read_text("utf-8").splitlines()[:400]


def start(translator: Translator, process: bool = True, workers: int | None = None,
          **limits) -> Batcher:
    batcher = Batcher(translator, Limits(**limits), Metrics().model("m"), process=process,
                      workers=workers, threads=workers)
    batcher.start()
    end = time.monotonic() + 120
    while not (batcher.ready.wait(0.05) and all(c.warm for c in batcher._children)):
        assert batcher.failed is None, batcher.failed
        assert time.monotonic() < end, "the workers never warmed up"
    return batcher


def fields(result) -> tuple:
    return (result.text, [t for t, _ in result.nbest], result.warnings,
            sorted(result.domains), result.conditioned_by)


@pytest.mark.parametrize("process, n", [(True, 100), (False, 30)], ids=["process", "thread"])
def test_concurrent_requests_get_their_alone_translations(translator, sources, process, n):
    """``n`` one-sentence requests of mixed lengths and a few larger ones (empty lines, a text
    the model takes in pieces, n-best) at once: each request gets exactly what
    ``Translator.translate`` gives its texts alone."""
    long = " ".join(sources[200:215])  # beyond the model's 64 pieces: translated in pieces
    requests = [([s], Options()) for s in sorted(sources[:n], key=len)[::-1]]
    requests += [([sources[130], "", "  ", sources[131]], Options()),
                 ([long], Options()), (sources[140:150], Options(n_best=2))]
    batcher = start(translator, process)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda r: batcher.submit(r[0], r[1], 120.0), requests))
            answers = [f.result(120) for f in futures]
    finally:
        batcher.close()
    for (texts, options), got in zip(requests, answers, strict=True):
        want = translator.translate(texts, n_best=options.n_best, batch_size=1)
        assert [fields(r) for r in got] == [fields(r) for r in want]
        assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-4)
    assert batcher.translated == sum(len(t) for t, _ in requests)


def test_a_short_sentence_is_not_held_up_by_a_long_batch(translator, sources):
    """A sentence arriving while a batch of long ones decodes joins the running batch and is
    answered while the long ones are still decoding."""
    longest = sorted(sources, key=len)[-24:]
    batcher = start(translator)
    try:
        long = batcher.submit(longest, Options(), 120.0)
        order: list[str] = []
        long.add_done_callback(lambda _: order.append("long"))
        while batcher.batches == 0:  # the long ones are decoding
            time.sleep(0.001)
        short = batcher.submit(["Hallo."], Options(), 120.0)
        short.add_done_callback(lambda _: order.append("short"))
        assert short.result(120)[0].text == translator.translate(["Hallo."])[0].text
        long.result(120)
    finally:
        batcher.close()
    assert order == ["short", "long"]


def test_close_with_a_half_full_batch_answers_everything(translator, sources):
    """close() while some requests decode and others wait: every one is answered in full,
    and only then does the worker stop."""
    batcher = start(translator, max_batch_tokens=200)  # a few sentences in the batch at once
    texts = sources[300:330]
    futures = [batcher.submit([t], Options(), 120.0) for t in texts]
    while batcher.batches == 0:
        time.sleep(0.001)
    assert not all(f.done() for f in futures)
    batcher.close()
    assert all(f.done() for f in futures)
    want = translator.translate(texts, batch_size=1)
    assert [f.result()[0].text for f in futures] == [r.text for r in want]
    assert not batcher._children[0].handle


def test_a_worker_process_that_dies_is_replaced(translator, sources):
    """SIGKILL the worker in the middle of a request: the request is answered with
    WorkerDied (a 5xx to its client), ready is cleared until a new worker has warmed up, and
    the new worker answers the next requests."""
    batcher = start(translator)
    try:
        first = batcher._children[0].handle.pid
        future = batcher.submit(sorted(sources, key=len)[-40:], Options(), 120.0)
        while batcher.batches == 0:
            time.sleep(0.001)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(WorkerDied, match="died"):
            future.result(60)
        end = time.monotonic() + 120
        while not batcher.ready.wait(0.05):
            assert time.monotonic() < end, "no new worker"
        assert batcher._children[0].handle.pid != first and batcher.restarts == 1
        got = batcher.submit([sources[5]], Options(), 60.0).result(60)
        assert got[0].text == translator.translate([sources[5]])[0].text
    finally:
        batcher.close()


def test_expired_and_cancelled_requests_leave_the_batch(translator, sources):
    """A request past its deadline, or whose waiter cancelled it, is answered Expired or
    left alone, and its sentences stop taking room in the batch."""
    batcher = start(translator, max_batch_tokens=100)
    try:
        late = batcher.submit(sorted(sources, key=len)[-30:], Options(), 0.2)
        cancelled = batcher.submit(sources[:30], Options(), 60.0)
        assert cancelled.cancel()
        with pytest.raises(Expired):
            late.result(60)
        done = threading.Event()
        batcher.submit([sources[7]], Options(), 60.0).add_done_callback(lambda _: done.set())
        assert done.wait(60)
    finally:
        batcher.close()
    assert batcher.translated == 1


def test_two_workers_share_the_requests(translator, sources):
    """With two worker processes, concurrent requests go to both, each answered with its
    alone-translation; a worker busy alone is told to use all the threads, two busy ones
    half each."""
    texts = sorted(sources[:80], key=len)[::-1]
    batcher = start(translator, workers=2)
    try:
        alone = batcher.submit([texts[0]], Options(), 120.0)
        first, second = batcher._children
        assert (first.threads, second.threads) == (2, 1)  # the only busy one: all threads
        alone.result(120)
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda t: batcher.submit([t], Options(), 120.0), texts))
            with batcher._lock:  # both busy: half each
                assert not (first.load and second.load) or \
                    (first.threads, second.threads) == (1, 1)
            answers = [f.result(120)[0] for f in futures]
    finally:
        batcher.close()
    want = translator.translate(texts, batch_size=1)
    assert [fields(r) for r in answers] == [fields(r) for r in want]
    assert first.answered > 10 and second.answered > 10
    assert first.answered + second.answered == len(texts) + 1


def test_one_of_two_workers_dies(translator, sources):
    """SIGKILL one of two workers: its request is answered with WorkerDied, the other
    worker's request with its translation, the service stays ready throughout, and the
    replacement takes requests again."""
    longest = sorted(sources, key=len)[-40:]
    batcher = start(translator, workers=2)
    try:
        mine = batcher.submit(longest, Options(), 120.0)  # to worker 0
        other = batcher.submit(longest[:20], Options(), 120.0)  # worker 0 is busy: worker 1
        victim, survivor = batcher._children
        pid = victim.handle.pid
        while batcher.batches == 0:
            time.sleep(0.001)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerDied, match="died"):
            mine.result(60)
        assert batcher.ready.is_set()
        assert [r.text for r in other.result(120)] == \
            [r.text for r in translator.translate(longest[:20], batch_size=1)]
        end = time.monotonic() + 120
        while not victim.warm:
            assert time.monotonic() < end, "no new worker"
            time.sleep(0.05)
        assert victim.handle.pid != pid and batcher.restarts == 1
        assert survivor.answered == 20
        got = batcher.submit([sources[5]], Options(), 60.0).result(60)  # both idle: worker 0
        assert got[0].text == translator.translate([sources[5]])[0].text
        assert victim.answered == 1
    finally:
        batcher.close()


def test_the_loop_takes_its_thread_count_from_a_message(translator):
    """run_loop applies ("threads", n) before its next step, as a worker process gets it."""
    from translate.serve.worker import Worker, run_loop

    messages = [[("threads", 2), ("stop",)]]
    try:
        run_loop(Worker(translator), lambda block: messages.pop() if messages else [],
                 lambda update: None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
