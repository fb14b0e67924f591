"""torchrun: the process group, this process's rank, and the few collectives training needs.

``torchrun`` starts one process per GPU (or per CPU share) and tells each its place through
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``);
:func:`from_env` reads it, so ``python -m translate.train`` without torchrun stays a plain,
single-process run that never touches ``torch.distributed``.

Two groups: the default one (NCCL on GPUs, gloo on the CPU) carries the gradients and the
per-step agreement (:meth:`Distributed.all_sum`); a second, gloo-only group with a long
timeout carries what waits on rank 0 alone (validation, the final test, checkpoint RNG
states), so that a long validation does not trip the gradient group's timeout.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# How long the other ranks wait for rank 0's validation or final test; a validation of a
# large set with beam search can take far longer than a gradient all-reduce ever should.
WAIT_ENV = "TRANSLATE_DIST_WAIT_MINUTES"
DEFAULT_WAIT_MINUTES = 180.0


@dataclass(frozen=True)
class Rank:
    """Where this process stands among the ``world_size`` training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env(environ: Mapping[str, str] = os.environ) -> Rank:
    """The rank torchrun gave this process; a single process without torchrun."""
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Rank()
    return Rank(int(environ["RANK"]), world, int(environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, rank: Rank) -> torch.device:
    """One GPU per process on a node: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if device.type != "cuda" or rank.world_size == 1:
        return device
    return torch.device("cuda", rank.local_rank)


def shard(group: list[list[int]], rank: Rank) -> list[tuple[list[int], bool]]:
    """This rank's micro-batches of a step's ``group``: every ``world_size``-th one.

    Returns ``(indices, real)`` pairs. A rank left without a batch (an epoch's last, short
    group) gets the group's first batch marked not real: it runs forward and backward with
    weight 0, because every rank must join the gradient all-reduce of every step.
    """
    mine = [(b, True) for b in group[rank.rank::rank.world_size]]
    return mine or [(group[0], False)]


class Distributed:
    """The initialised process group of a torchrun job and its collectives."""

    def __init__(self, rank: Rank, device: torch.device) -> None:
        self.rank = rank
        self.device = device
        backend = "nccl" if device.type == "cuda" else "gloo"
        self.backend = backend  # the gradient group's
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank.rank, world_size=rank.world_size,
                                    **({"device_id": device} if backend == "nccl" else {}))
        minutes = float(os.environ.get(WAIT_ENV) or DEFAULT_WAIT_MINUTES)
        self.wait_group = dist.new_group(backend="gloo", timeout=timedelta(minutes=minutes))

    @property
    def is_main(self) -> bool:
        return self.rank.is_main

    @property
    def world_size(self) -> int:
        return self.rank.world_size

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64), on the gradient group's device."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def from_main(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank; the others wait (long timeout) until it sends."""
        t = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(t, src=0, group=self.wait_group)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects)."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.wait_group)
        return out

    def barrier(self) -> None:
        """Wait for every rank, with the long timeout (rank 0 may be validating)."""
        dist.barrier(group=self.wait_group)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it writes the tokenizer and caches), then the rest
        read what it wrote."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class SilentTracker:
    """The tracker of ranks other than 0: rank 0 alone writes metrics and the W&B run."""

    mode = "disabled"
    sync_command = None

    def log(self, metrics: dict, step: int) -> None:
        pass

    def log_samples(self, rows: list[dict], step: int) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass
