"""The model's worker in a process of its own, and the service's handle on it.

Why a process: the decoding loop runs Python between the model's operations at every step,
and so does the event loop for every request (HTTP parsing, JSON, the handlers). In one
process they take turns on the interpreter's lock, so each delays the other; in two they
run side by side and exchange only the requests' texts and their translations (pickled over
a pipe, microseconds against a decoding step's milliseconds). docs/serve.md has the profile
and the figures.

The child gets the translator the parent loaded (pickled once: weights, tokenizer, options),
so both see one model and the child never reads the run directory again; it ignores SIGINT
(Ctrl-C reaches the whole process group, and the parent must drain first) and exits when
told to stop, once every request it holds is answered, or when the parent goes away. The
parent notices a child that died (its pipe closes): the handle reports the exit code, and
the :class:`~translate.serve.batcher.Batcher` answers the requests it held with a 5xx and
starts another child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

from translate.inference.translator import Translator

__all__ = ["WorkerProcess"]

log = logging.getLogger("translate.serve")


def _child(conn: Connection, payload: bytes, options: dict, max_sentences: int | None,
           max_pieces: int, threads: int, warmup: Sequence[str]) -> None:
    """The child's main: load, warm up, say ready, then the decoding loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from translate import tuning
    from translate.serve.worker import Worker, run_loop

    torch.set_num_threads(threads)
    translator: Translator = pickle.loads(payload)
    del payload
    if translator.quantized:
        tuning.retain_freed_memory()
    try:
        worker = Worker(translator, options, max_sentences, max_pieces)
        worker.warm_up(warmup)
    except Exception as err:  # reported by the parent, which stops serving this model
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready",))

    def receive(block: bool) -> list[tuple]:
        messages = []
        try:
            if block:
                messages.append(conn.recv())
            while conn.poll():
                messages.append(conn.recv())
        except (EOFError, OSError):  # the parent is gone: nobody is left to answer
            os._exit(0)
        return messages

    run_loop(worker, receive, lambda update: conn.send(("update", update)))


class WorkerProcess:
    """One child process running the decoding loop, seen from the service's side.

    ``on_message(message)`` is called in a reader thread for each message from the child
    (``("ready",)``, ``("failed", why)``, ``("update", Update)``);
    ``on_exit(exit_code)`` once the child is gone, whatever the reason.
    """

    def __init__(self, payload: bytes, options: dict, max_sentences: int | None,
                 max_pieces: int, threads: int, warmup: Sequence[str],
                 on_message: Callable[[tuple], None], on_exit: Callable[[int | None], None],
                 name: str = "translate-worker") -> None:
        ctx = multiprocessing.get_context("spawn")  # a fork would copy the parent's threads
        self._conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=_child, name=name, daemon=True,
            args=(child_conn, payload, options, max_sentences, max_pieces, threads,
                  list(warmup)))
        self._child_conn = child_conn
        self._outbox: queue.Queue = queue.Queue()
        self._on_message, self._on_exit = on_message, on_exit
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._writer = threading.Thread(target=self._write, name=f"{name}-writer", daemon=True)

    @staticmethod
    def payload(translator: Translator) -> bytes:
        """What a child is started from: the translator, pickled once."""
        return pickle.dumps(translator, protocol=pickle.HIGHEST_PROTOCOL)

    def start(self) -> None:
        self.process.start()
        self._child_conn.close()  # the child's end lives in the child only: EOF when it dies
        self._reader.start()
        self._writer.start()

    def send(self, message: tuple) -> None:
        """Queue ``message`` for the child (never blocks: a writer thread sends it)."""
        self._outbox.put(message)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def join(self, timeout: float | None = None) -> None:
        self._reader.join(timeout)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()

    def _write(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._conn.send(message)
            except (OSError, ValueError):  # the child is gone; the reader reports it
                return

    def _read(self) -> None:
        try:
            while True:
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    break
                self._on_message(message)
        finally:
            self.process.join()
            self._outbox.put(None)
            self._conn.close()
            self._on_exit(self.process.exitcode)
