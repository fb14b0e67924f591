"""Training under torchrun: one :class:`DistributedTrainer` per process, DDP between them.

What each rank does, and why:

- **Data.** Every rank builds the same length-bucketed, seeded batch order; a step takes the
  next ``accum_steps * world_size`` batches and rank ``r`` runs every ``world_size``-th one
  (:func:`translate.training.distributed.shard`), so the ranks' shares are disjoint and together are
  exactly the micro-batches a single process with ``accum_steps * world_size`` would
  accumulate. The step's token count is known to every rank from the lengths alone (the
  order is shared), so no collective is needed for it.
- **Loss.** A single process divides each micro-batch's summed loss by the step's token
  count; DDP *averages* gradients over ranks, so each rank multiplies by ``world_size`` to
  turn that average back into the sum. The result equals the single-process accumulation.
- **Gradients.** ``no_sync`` for all but a rank's last micro-batch: one all-reduce a step.
- **Agreement.** Whatever differs between processes (a signal, the wall clock behind
  ``max_minutes`` and ``save_every_minutes``, a non-finite loss) is summed over ranks at the
  point of decision, so every rank takes the same branch and no collective is left waiting.
- **Rank 0 writes.** The run directory, its lock, checkpoints, logs, ``metrics.jsonl`` and
  the W&B run; checkpoints carry every rank's RNG states so that ``--resume`` with the same
  number of ranks replays the run exactly.
- **Validation on rank 0 alone.** It decodes the whole validation set and scores it with
  sacrebleu, which needs all hypotheses in one place; splitting it would add a gather for a
  small gain. The others wait in a broadcast on a gloo group whose timeout is long
  (:data:`translate.training.distributed.WAIT_ENV`), then apply the same learning-rate decision.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
from torch.nn.parallel import DistributedDataParallel

from translate.config import Config
from translate.runs.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from translate.runtime import autocast, resolve_device
from translate.tracking.tracker import Tracker
from translate.training.distributed import Distributed, Rank, SilentTracker, rank_device, shard
from translate.training.loss import batch_losses
from translate.training.trainer import Trainer

log = logging.getLogger("translate.train")


class DistributedTrainer(Trainer):
    """A :class:`Trainer` that is one of ``world_size`` torchrun processes."""

    def __init__(self, cfg: Config, rank: Rank, resume: bool = False,
                 overwrite: bool = False, origin: dict | None = None) -> None:
        self.rank = rank
        self.dist: Distributed | None = None  # set by _resolve_device, before the data
        super().__init__(cfg, resume=resume, overwrite=overwrite, origin=origin)
        if not resume and rank.rank:
            # Different dropout masks per rank (the weights were built from the shared seed).
            torch.manual_seed(cfg.training.seed + 1_000_003 * rank.rank)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.net = DistributedDataParallel(self.model, device_ids=device_ids)

    # ------------------------------------------------------------------ hooks

    @property
    def is_main(self) -> bool:  # type: ignore[override]
        return self.rank.is_main

    @property
    def world_size(self) -> int:  # type: ignore[override]
        return self.rank.world_size

    @property
    def backend(self) -> str | None:  # type: ignore[override]
        return self.dist.backend if self.dist is not None else None

    def _resolve_device(self) -> torch.device:
        device = rank_device(resolve_device(self.cfg.training.device), self.rank)
        self.dist = Distributed(self.rank, device)
        return device

    def _main_first(self) -> contextlib.AbstractContextManager:
        return self.dist.main_first()

    def _tracker(self, mode: str, resume: bool, logged: int = 0) -> Tracker:
        return super()._tracker(mode, resume, logged) if self.is_main else SilentTracker()

    def _share(self, group: list[list[int]]) -> list[tuple[list[int], bool]]:
        return shard(group, self.rank)

    def _agree(self, flag: bool) -> bool:
        return self.dist.all_sum([float(flag)])[0] > 0

    def _stopping(self) -> bool:
        if self._agree(bool(self._stop_signal)):
            self._stop_signal = self._stop_signal or "stop on another rank"
            return True
        return False

    def _done(self, start: float) -> bool:
        return self._agree(super()._done(start))

    def _save_due(self, saved_at: float) -> bool:
        return self._agree(super()._save_due(saved_at))

    def _resume_command(self) -> str:
        return (f"torchrun --nproc_per_node={self.world_size} -m translate.train "
                f"--resume {self.run.root}  (the same number of processes in all)")

    # ------------------------------------------------------------------ state

    def save_last(self) -> None:
        """Collective: every rank's RNG states go into rank 0's ``last.pt``."""
        rngs = self.dist.gather(capture_rng_state())
        if self.is_main:
            state = self._state()
            state["rng_ranks"] = rngs
            state["world_size"] = self.world_size
            save_checkpoint(self.run.last_path, state)

    def _restore(self, state: dict) -> None:
        super()._restore(state)
        rngs = state.get("rng_ranks") or []
        if len(rngs) == self.world_size:
            restore_rng_state(rngs[self.rank.rank])
        elif self.is_main:
            log.warning("%s was saved by %d process(es), resumed with %d: the data order "
                        "goes on where it stopped, the random streams (dropout) do not",
                        self.run.last_path, len(rngs) or 1, self.world_size)

    # ------------------------------------------------------------------ rank 0 alone

    def _validate_and_save(self, start: float) -> bool:
        stop, loss = False, math.nan
        if self.is_main:
            stop = self._validate_and_keep(start)
            loss = math.nan if self.valid_loss is None else self.valid_loss
        stop_all, loss_all = self.dist.from_main([float(stop), loss])
        if not self.is_main and not math.isnan(loss_all):
            self.scheduler.step_validation(loss_all)
        self.save_last()
        return stop_all > 0

    def _write_shortlist(self) -> None:
        if self.is_main:
            super()._write_shortlist()

    def _finish(self) -> dict:
        summary = super()._finish() if self.is_main else {"rank": self.rank.rank}
        self.dist.barrier()
        return summary

    # ------------------------------------------------------------------ step

    def _step(self, group: list[list[int]]) -> dict | None:
        """This rank's share of one optimizer step; see the module docstring for the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        ntokens = sum(self._batch_tokens(ix) for ix in group)  # the whole step's, all ranks
        world, mine = self.world_size, self._share(group)
        # loss, nll, tag loss, real and padded positions: this rank's part of the step's sums
        local = [0.0, 0.0, 0.0, 0.0, 0.0]
        for i, (indices, real) in enumerate(mine):
            batch = self._batch(indices)
            if real:  # padding share as the plain step counts it, over the real batches
                positions = self._positions(batch, indices)
                local[3], local[4] = local[3] + positions[0], local[4] + positions[1]
            weight = float(world) if real else 0.0
            sync = i == len(mine) - 1
            with (contextlib.nullcontext() if sync else self.net.no_sync()):
                with autocast(self.device, self.dtype):
                    trans, tag = batch_losses(self.net, batch, self.loss_fn, self.pos_weight)
                loss = trans.loss / ntokens * weight
                if tag is not None:
                    # as a single process weighs it (mean over the step's micro-batches)
                    loss = loss + self.cfg.model.tagger.loss_weight * tag / len(group) * weight
                    local[2] += float(tag.detach()) / len(group) * weight / world
                local[0] += float(loss.detach()) / world
                local[1] += float(trans.nll) if real else 0.0
                self.scaler.scale(loss).backward()
        loss, nll, tag_loss, real_pos, slots = self.dist.all_sum(local)
        totals = {"loss": loss, "nll": nll, "tag_loss": tag_loss,
                  "padding": 1.0 - real_pos / max(slots, 1.0)}
        # Gradients are all-reduced, so the norm (and whether it is finite) is the same on
        # every rank: they all step or all skip.
        return self._clip_and_step(totals, ntokens)


def train(cfg: Config, rank: Rank, resume: bool = False, overwrite: bool = False,
          origin: dict | None = None) -> dict:
    """Run one rank to the end and leave the process group cleanly, also on an error."""
    try:
        return DistributedTrainer(cfg, rank, resume=resume, overwrite=overwrite,
                                  origin=origin).fit()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
