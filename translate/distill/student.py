"""The train stage: the student trained by the normal trainer on the distilled corpus.

The student's config is the user's, with ``data.train`` replaced by the distilled corpus'
files (each with its pairs' domain labels) - followed by the original sources when
``distill.keep_references`` is set - and the ``tokenizer`` section replaced by the teacher's.
The teacher's tokenizer folder is copied into the student's run directory before the
trainer prepares it, so the trainer's own rule (a run keeps the tokenizer in its folder)
makes both models share one vocabulary, and everything else (run directory layout,
checkpoints, ``--resume``, W&B, the tagging head, the shortlist) is the trainer's as usual.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from pathlib import Path

from translate import config as config_mod
from translate.config import Config, SourceConfig
from translate.distill.store import DistillError, Group
from translate.runs.rundir import RunDir
from translate.training.distributed import Rank

log = logging.getLogger(__name__)


def student_config(cfg: Config, teacher_cfg: Config, groups: list[Group]) -> Config:
    """The config the student is trained with (validated)."""
    if not groups:
        raise DistillError("the distilled corpus is empty: data.train has no lines")
    student = copy.deepcopy(cfg)
    distilled = [SourceConfig(kind="text", prefix=str(g.prefix), domains=list(g.domains))
                 for g in groups]
    keep = copy.deepcopy(cfg.data.train) if cfg.distill.keep_references else []
    student.data.train = distilled + keep
    if dataclasses.asdict(cfg.tokenizer) != dataclasses.asdict(teacher_cfg.tokenizer):
        log.info("distill: the student reuses the teacher's tokenizer; the config's tokenizer "
                 "section is replaced by the teacher's")
    student.tokenizer = copy.deepcopy(teacher_cfg.tokenizer)
    return config_mod.validate(student)


def claim_run(cfg: Config, teacher: Path, overwrite: bool) -> None:
    """Make the student's run directory a new run's and give it the teacher's tokenizer.
    An earlier run there is refused unless ``overwrite`` (then deleted), as training does."""
    run = RunDir(cfg.training.run_dir)
    lock = run.create().lock()
    try:
        gone = run.claim(overwrite)
        if gone:
            log.warning("%s: --overwrite: deleted the earlier run's %s", run.root,
                        ", ".join(gone))
        source = RunDir(teacher).tokenizer_dir
        shutil.rmtree(run.tokenizer_dir, ignore_errors=True)
        shutil.copytree(source, run.tokenizer_dir)
        log.info("distill: %s: the teacher's tokenizer, from %s", run.tokenizer_dir, source)
    finally:
        lock.release()


def train(cfg: Config, teacher: Path, resume: bool = False, overwrite: bool = False,
          rank: Rank | None = None) -> dict:
    """Train (or, ``resume``, continue) the student described by ``cfg``
    (:func:`student_config`); returns the trainer's summary."""
    rank = rank or Rank()
    if resume:
        run = RunDir(cfg.training.run_dir)
        if not run.last_path.is_file():
            raise DistillError(f"{run.root}: no last.pt to resume; start the student without "
                               "--resume")
    elif rank.is_main:
        claim_run(cfg, teacher, overwrite)
    if rank.world_size > 1:
        from translate.training.ddp import train as ddp_train

        return ddp_train(cfg, rank, resume=resume)
    from translate.training.trainer import Trainer

    return Trainer(cfg, resume=resume).fit()
