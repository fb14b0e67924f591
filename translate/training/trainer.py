"""The training loop: steps, AMP, clipping, resume, signals (validation: train_eval.py).

A run is a directory (see :class:`translate.runs.rundir.RunDir`). Everything needed to go on
or to translate later is written there, and `--resume` restores the exact position in the
data order and every RNG, so that on the CPU a stopped-and-resumed run ends with the same
weights as one that never stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time

import torch
from tqdm import tqdm

from translate import config as config_mod
from translate.config import Config
from translate.data.batching import Batch, BatchSampler, collate
from translate.data.sampling import DomainSampler, is_active
from translate.errors import TranslateError
from translate.model import build_model
from translate.runs.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from translate.runs.rundir import RunDir
from translate.runtime import (
    autocast,
    configure_cuda,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_threads,
)
from translate.tracking.tracker import Tracker, resolve_mode, run_log, say
from translate.training.evaluator import EvaluationMixin
from translate.training.loss import TranslationLoss, batch_losses
from translate.training.prefetch import Prefetcher
from translate.training.prepare import Prepared, prepare
from translate.training.progress import Progress, ProgressLines
from translate.training.run_summary import RunSummary, one_line
from translate.training.schedule import build_scheduler

log = logging.getLogger("translate.train")


class TrainingError(TranslateError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message says why."""


class Trainer(EvaluationMixin):
    """One training process; :class:`translate.training.ddp.DistributedTrainer` is one of many
    (torchrun), and overrides the hooks marked "hook" below."""

    is_main = True  # the process that writes the run directory (hook)
    world_size = 1  # processes that share each step's batches (hook)
    backend: str | None = None  # torch.distributed's backend; None for one process (hook)

    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False,
                 origin: dict | None = None) -> None:
        """``resume``: continue the run in ``cfg.training.run_dir`` from its last.pt.
        Otherwise a new run starts there, which an earlier run's results refuse unless
        ``overwrite`` (deletes them first; :meth:`RunDir.clear`). ``origin``: what the
        command line asked for (config file, overrides), recorded in ``summary.json``."""
        self.cfg = cfg
        self.run = RunDir(cfg.training.run_dir)
        self.origin = origin
        self.record: RunSummary | None = None  # summary.json's writer, once the run is ours
        # One writer per run directory, held until fit ends (or setting up fails: a
        # program that catches the error may start another trainer on the folder).
        self._lock = self.run.create().lock() if self.is_main else None
        try:
            self._set_up(cfg, resume, overwrite)
        except BaseException as err:
            self._record_end(err)
            if self._lock is not None:
                self._lock.release()
            raise

    def _set_up(self, cfg: Config, resume: bool, overwrite: bool) -> None:
        if self.is_main and not resume:
            gone = self.run.claim(overwrite)
            if gone:
                log.warning("%s: --overwrite: deleted the earlier run's %s", self.run.root,
                            ", ".join(gone))
        set_threads(cfg.training.num_threads)
        seed_everything(cfg.training.seed)
        configure_cuda()
        self.device = self._resolve_device()
        self.dtype = resolve_precision(cfg.training.precision, self.device)
        self.record = RunSummary(self.run, enabled=self.is_main)
        self.record.start(cfg, resume=resume, world_size=self.world_size, backend=self.backend,
                          device=self.device, dtype=self.dtype, origin=self.origin)
        # before the long work, like the above
        tracking = resolve_mode(cfg.logging.wandb) if self.is_main else "disabled"
        with self._main_first(), self._run_log():
            self.data: Prepared = prepare(cfg, self.run, log=log.info)
        tok = self.data.tokenizer
        self.special = {"pad_id": tok.pad_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id}
        self.model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size, tok.pad_id,
                                 len(self.data.labels)).to(self.device)
        self.net: torch.nn.Module = self.model  # the training forward (DDP wraps the model)
        tr = cfg.training
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tr.lr,
                                           betas=tuple(tr.betas), weight_decay=tr.weight_decay,
                                           fused=True)  # one kernel for all parameters
        self.scheduler = build_scheduler(self.optimizer, tr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.loss_fn = TranslationLoss(tok.pad_id, tr.label_smoothing)
        self.eval_loss_fn = TranslationLoss(tok.pad_id, 0.0)
        self.pos_weight = self.data.pos_weight.to(self.device) if (
            cfg.model.tagger.pos_weight and self.data.pos_weight is not None) else None
        train = self.data.splits["train"]
        rows = None
        if is_active(cfg.data.sampling):
            domains = DomainSampler(self.data.domains["train"], cfg.data.sampling, tr.seed)
            log.info(domains.describe())
            rows = domains.rows
        self.sampler = BatchSampler(train.src_lens, train.tgt_lens, tr.batch_type,
                                    tr.max_tokens, tr.batch_size, shuffle=True, seed=tr.seed,
                                    rows=rows)
        self.train_tgt_lens = train.tgt_lens
        self.progress = Progress()
        self.thresholds: list[float] = []
        self._nonfinite = 0
        self._stop_signal: str | None = None
        logged = 0  # the last step the interrupted process logged: W&B has it already
        self._prefetch: Prefetcher | None = None
        if resume:
            # Loaded on the CPU: load_state_dict moves weights and optimizer state to the
            # parameters' device, and the RNG states must stay CPU tensors.
            self._restore(load_checkpoint(self.run.last_path, map_location="cpu"))
            logged = self.run.last_logged_step()
            if self.is_main:
                with run_log(self.run.log_path):  # the steps after it are replayed: cut logs
                    self.run.truncate_logs(self.progress.step)
        if self.is_main:
            # Only now: a run that could not start (bad data, or a resume whose --set
            # changes what its checkpoint holds) leaves the saved config as it was.
            config_mod.save(cfg, self.run.config_path)
        self.tracker = self._tracker(tracking, resume, logged)
        wandb_run = {"mode": self.tracker.mode}
        if self.tracker.mode != "disabled":
            wandb_run.update(id=self.run.read_wandb_id(), project=cfg.logging.project)
        self.record.training(self.data.report, sum(p.numel() for p in self.model.parameters()),
                             self.data.labels, wandb_run)

    # ------------------------------------------------------------------ hooks

    def _resolve_device(self) -> torch.device:
        return resolve_device(self.cfg.training.device)

    def _main_first(self) -> contextlib.AbstractContextManager:
        """Rank 0 prepares the data before the others read its tokenizer (hook)."""
        return contextlib.nullcontext()

    def _run_log(self) -> contextlib.AbstractContextManager:
        return run_log(self.run.log_path) if self.is_main else contextlib.nullcontext()

    def _tracker(self, mode: str, resume: bool, logged: int = 0) -> Tracker:
        """``logged``: the last step the interrupted process logged (W&B has it already)."""
        return Tracker(self.cfg.logging, self.run, config_mod.to_dict(self.cfg),
                       resume_id=self.run.read_wandb_id() if resume else None, mode=mode,
                       resume_step=logged)

    def _share(self, group: list[list[int]]) -> list[tuple[list[int], bool]]:
        """This process's micro-batches of a step's group, each with "counts" (hook)."""
        return [(b, True) for b in group]

    def _stopping(self) -> bool:
        """A signal asked to stop (all ranks agree on it under DDP: hook)."""
        return bool(self._stop_signal)

    # ------------------------------------------------------------------ state

    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": vars(self.progress).copy(),
            "rng": capture_rng_state(),
            "config": config_mod.to_dict(self.cfg),
            "thresholds": list(self.thresholds),
        }

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as err:
            detail = " ".join(str(err).split())[:300]
            raise CheckpointError(
                f"{self.run.last_path}: its weights do not fit the model this config builds "
                "(a resumed run keeps its model settings: drop the --set model.* overrides): "
                f"{detail}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        self.thresholds = list(state.get("thresholds", []))
        restore_rng_state(state["rng"])

    def save_last(self) -> None:
        save_checkpoint(self.run.last_path, self._state())

    # ------------------------------------------------------------------ loop

    def _done(self, start: float) -> bool:
        tr, p = self.cfg.training, self.progress
        if tr.max_steps and p.step >= tr.max_steps:
            return True
        if tr.max_epochs and p.epoch >= tr.max_epochs:
            return True
        return bool(tr.max_minutes) and p.elapsed + time.time() - start >= tr.max_minutes * 60

    def _on_signal(self, signum, _frame) -> None:
        self._stop_signal = signal.Signals(signum).name

    def fit(self) -> dict:
        """Train until a limit, early stopping or a signal; returns the final summary."""
        with self._run_log():
            return self._fit()

    def _fit(self) -> dict:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        log.info("run directory: %s", self.run.root.resolve())
        if self.progress.step:
            log.info("resumed from %s at step %d (epoch %d, batch %d)", self.run.last_path,
                     self.progress.step, self.progress.epoch, self.progress.batch_in_epoch)
        log.info("model: %.2fM parameters on %s (%s); %d training batches per epoch, "
                 "%.1f%% padding", sum(p.numel() for p in self.model.parameters()) / 1e6,
                 self.device, str(self.dtype).removeprefix("torch."), len(self.sampler),
                 100 * self.sampler.padding_fraction(self.progress.epoch))
        if self.world_size > 1:
            log.info("distributed: %s", self._distribution())
        try:
            summary = self._loop()
        except BaseException as err:
            self._record_end(err)
            raise
        else:
            if "interrupted" not in summary:
                self.record.ended("finished")
            return summary
        finally:
            self._feed(None)
            for s, h in handlers.items():
                signal.signal(s, h)
            self.tracker.finish()
            if self._lock is not None:
                self._lock.release()

    def _loop(self) -> dict:
        tr, p = self.cfg.training, self.progress
        start, window_tokens, window_start = time.time(), 0, time.time()
        bar = tqdm(total=tr.max_steps or None, initial=p.step, desc="train", unit="step",
                   dynamic_ncols=True, disable=None if self.is_main else True)
        lines = None if sys.stderr.isatty() or not self.is_main else ProgressLines(
            say, self.cfg.logging.log_every, tr.max_steps, tr.max_minutes, p.elapsed)
        saved_at = time.time()
        stopped_early = False
        self.model.train()
        while not self._done(start) and not stopped_early:
            batches = self.sampler.batches(p.epoch)
            self._feed(batches)
            while p.batch_in_epoch < len(batches) and not self._done(start):
                group = batches[p.batch_in_epoch:
                                p.batch_in_epoch + tr.accum_steps * self.world_size]
                stats = self._step(group)
                p.batch_in_epoch += len(group)
                if stats is None:
                    continue
                p.step += 1
                p.tokens += stats["ntokens"]
                window_tokens += stats["ntokens"]
                bar.update(1)
                if lines is not None:
                    lines.update(p.step, stats["loss"], stats["ntokens"])
                if p.step % tr.valid_every == 0 or p.step % self.cfg.logging.log_every == 0:
                    rate = window_tokens / max(time.time() - window_start, 1e-9)
                    window_tokens, window_start = 0, time.time()
                    stats.update(tokens_per_s=rate, lr=self.optimizer.param_groups[0]["lr"],
                                 skipped_steps=p.skipped)
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", tok_s=f"{rate:,.0f}",
                                    lr=f"{stats['lr']:.2e}")
                    self.tracker.log({f"train/{k}": v for k, v in stats.items()}, p.step)
                if p.step % tr.valid_every == 0:
                    stopped_early = self._validate_and_save(start)
                    saved_at = time.time()
                    self._record_progress(start)
                elif self._save_due(saved_at) and not self._done(start):  # end saves anyway
                    self._save_resumable(start)
                    saved_at = time.time()
                    self._record_progress(start)
                if self._stopping():
                    return self._interrupted(start, bar)
                if stopped_early:
                    break
            if p.batch_in_epoch >= len(batches):
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
        bar.close()
        if p.step % tr.valid_every != 0 and p.step > 0:
            self._validate_and_save(start)
        p.elapsed += time.time() - start
        self.save_last()
        self._write_shortlist()
        return self._finish()

    def _record_progress(self, start: float) -> None:
        """Where training stands, into summary.json (what a killed run leaves behind)."""
        p = self.progress
        self.record.progress(p.step, p.epoch, p.best, p.elapsed + time.time() - start,
                             p.tokens)

    def _record_end(self, err: BaseException) -> None:
        """A run that stops on an error says so in summary.json, with the error in one line
        (Ctrl-C outside the training loop, e.g. while the data is prepared: interrupted)."""
        if self.record is not None:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            self.record.ended(status, error=one_line(err))

    def _save_due(self, saved_at: float) -> bool:
        tr = self.cfg.training
        return bool(tr.save_every_steps and self.progress.step % tr.save_every_steps == 0) or (
            bool(tr.save_every_minutes) and time.time() - saved_at >= tr.save_every_minutes * 60)

    def _save_resumable(self, start: float) -> None:
        """``last.pt`` between validations, so that a kill loses minutes, not a whole
        ``valid_every``; it counts the training time so far, as a final save would."""
        before = self.progress.elapsed
        self.progress.elapsed += time.time() - start
        try:
            self.save_last()
        finally:
            self.progress.elapsed = before
        log.info("step %d: saved %s", self.progress.step, self.run.last_path)

    def _step(self, group: list[list[int]]) -> dict | None:
        """One optimizer step over ``group`` micro-batches; None when skipped (non-finite)."""
        self.optimizer.zero_grad(set_to_none=True)
        ntokens = sum(self._batch_tokens(ix) for ix in group)
        totals = {"loss": 0.0, "nll": 0.0, "tag_loss": 0.0}
        finite, real, slots = True, 0, 0
        for indices in group:
            batch = self._batch(indices)
            r, n = self._positions(batch, indices)
            real, slots = real + r, slots + n
            with autocast(self.device, self.dtype):
                trans, tag = batch_losses(self.model, batch, self.loss_fn, self.pos_weight)
            loss = trans.loss / ntokens
            if tag is not None:
                loss = loss + self.cfg.model.tagger.loss_weight * tag / len(group)
                totals["tag_loss"] += float(tag.detach()) / len(group)
            totals["loss"] += float(loss.detach())
            totals["nll"] += float(trans.nll)
            if not math.isfinite(totals["loss"]):
                finite = False
                break
            self.scaler.scale(loss).backward()
        totals["padding"] = 1.0 - real / max(slots, 1)
        return self._clip_and_step(totals, ntokens, finite)

    def _positions(self, batch: Batch, indices: list[int]) -> tuple[int, int]:
        """(real, all) positions of the padded src + tgt tensors of one micro-batch: the
        step's padding share. Counted from the CPU lengths: no device sync."""
        return (int(batch.src_lengths.sum()) + self._batch_tokens(indices),
                batch.src.numel() + batch.tgt_out.numel())

    def _clip_and_step(self, totals: dict, ntokens: int, finite: bool = True) -> dict | None:
        """Unscale and clip the accumulated gradients and take the optimizer step, or skip a
        non-finite one; ``totals`` (the step's sums) becomes the step's logged statistics.
        Shared by the plain and the DDP step, which differ only in how gradients accumulate."""
        grad_norm = float("nan")
        if finite:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.cfg.training.clip_norm or float("inf")))
            finite = math.isfinite(totals["loss"]) and (
                math.isfinite(grad_norm) or self.scaler.is_enabled())
        if not finite:
            return self._skip_nonfinite(totals["loss"], grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step_batch()
        self._nonfinite = 0
        totals.update(ntokens=ntokens, grad_norm=grad_norm, nll=totals["nll"] / ntokens,
                      ppl=math.exp(min(totals["nll"] / ntokens, 50.0)))
        return totals

    def _skip_nonfinite(self, loss: float, grad_norm: float) -> None:
        self._nonfinite += 1
        self.progress.skipped += 1  # over the whole run, logged as train/skipped_steps
        self.optimizer.zero_grad(set_to_none=True)
        log.warning("step %d: non-finite loss %s / gradient norm %s; step skipped (%d in a row)",
                    self.progress.step + 1, loss, grad_norm, self._nonfinite)
        if self._nonfinite >= self.cfg.training.max_nonfinite:
            self.save_last()
            raise TrainingError(
                f"the loss was non-finite in {self._nonfinite} steps in a row "
                f"(training.max_nonfinite={self.cfg.training.max_nonfinite}); stopped at step "
                f"{self.progress.step}. The last good weights are in {self.run.last_path}. "
                "Lower training.lr, raise training.warmup_steps or use precision fp32/bf16."
            )
        return None

    def _feed(self, batches: list[list[int]] | None) -> None:
        """On a GPU, build this epoch's batches ahead of the steps in a background thread
        (collated and pinned while the GPU runs the step before); None stops it. On the
        CPU batches stay built in the step, in order, as resume exactness wants."""
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None
        if batches is None or self.device.type != "cuda":
            return
        n, start = self.cfg.training.accum_steps * self.world_size, self.progress.batch_in_epoch
        order = (b for i in range(start, len(batches), n)
                 for b, _ in self._share(batches[i:i + n]))
        split = self.data.splits["train"]
        self._prefetch = Prefetcher(
            order, lambda ix: collate(split, ix, **self.special).pin_memory())

    def _batch(self, indices: list[int]) -> Batch:
        """Micro-batch ``indices`` on the training device."""
        if self._prefetch is not None:
            batch = self._prefetch.get(indices)
        else:
            batch = collate(self.data.splits["train"], indices, **self.special)
            if self.device.type == "cuda":
                batch = batch.pin_memory()  # lets the copy below overlap with compute
        return batch.to(self.device, non_blocking=True)

    def _batch_tokens(self, indices: list[int]) -> int:
        return sum(self.train_tgt_lens[i] + 1 for i in indices)

    def _interrupted(self, start: float, bar) -> dict:
        bar.close()
        self.progress.elapsed += time.time() - start
        self.save_last()
        cmd = self._resume_command()
        p = self.progress
        self.record.progress(p.step, p.epoch, p.best, p.elapsed, p.tokens)
        self.record.ended("interrupted", signal=self._stop_signal, resume=cmd)
        msg = (f"{self._stop_signal}: stopped at step {self.progress.step}; "
               f"saved {self.run.last_path}. Resume with:\n  {cmd}")
        if self.is_main:
            say(msg)
        return {"interrupted": self._stop_signal, "step": self.progress.step, "resume": cmd}

    def _distribution(self) -> str:
        """How many processes train and the batch one optimizer step takes from all of them,
        e.g. ``2 ranks (gloo), global batch = 2 x 1 x 400 tokens = 800 tokens (ranks x
        accum_steps x max_tokens)``; a token budget bounds each micro-batch's padded size."""
        tr = self.cfg.training
        n, accum = self.world_size, tr.accum_steps
        size, unit, key = ((tr.max_tokens, "tokens", "max_tokens") if tr.batch_type == "tokens"
                           else (tr.batch_size, "sentences", "batch_size"))
        return (f"{n} ranks ({self.backend}), global batch = {n} x {accum} x {size} {unit} "
                f"= {n * accum * size} {unit} (ranks x accum_steps x {key})")

    def _resume_command(self) -> str:
        return f"python -m translate.train --resume {self.run.root}"
