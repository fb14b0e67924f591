"""Batches built ahead of the training step, in a background thread.

On a GPU the step's Python work (collating rows into padded tensors, page-locking them)
would otherwise sit between two steps while the GPU waits. A thread builds the next few
micro-batches while the main thread waits on the GPU (CUDA synchronisation and most torch
operators release the GIL). The order is fixed in advance (the epoch's seeded batch order),
so the trainer asks for the batch it expects and gets exactly that one.

A thread rather than ``DataLoader`` workers: collation is cheap next to a GPU step and
reads the encoded split in place, with no second copy of the corpus per worker process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class Prefetcher(Generic[T]):
    """Runs ``build`` over ``order`` (lists of row indices) up to ``depth`` items ahead."""

    def __init__(self, order: Iterable[list[int]], build: Callable[[list[int]], T],
                 depth: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iter(order), build),
                                        name="translate-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, order, build) -> None:
        try:
            for indices in order:
                if not self._put((indices, build(indices))):
                    return
        except BaseException as err:  # handed to the main thread, raised there
            self._put((None, err))
            return
        self._put((None, _END))

    def get(self, indices: list[int]) -> T:
        """The batch of ``indices``; batches before it that were not asked for (a step cut
        short, e.g. by a non-finite loss) are dropped."""
        while True:
            got, item = self._queue.get()
            if got is None:
                if item is _END:
                    raise RuntimeError(f"prefetch: batch {indices[:4]}... is not in the order")
                raise item
            if got == indices:
                return item

    def close(self) -> None:
        """Stop the thread and drop what it built; safe to call twice."""
        self._stop.set()
        while True:  # unblock a put in progress
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)
