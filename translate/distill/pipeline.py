"""The two stages in order, as ``python -m translate.distill`` runs them.

``translate`` makes (or completes) the distilled corpus; ``train`` trains the student on it;
``all`` does both. Each can run alone: a killed translation is restarted by running the
command again, a killed student by ``--stage train --resume``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from translate import config as config_mod
from translate.config import Config, ConfigError
from translate.distill import student, teacher
from translate.distill.store import Group, Store
from translate.runs.rundir import RunDir
from translate.training.distributed import Rank, from_env

log = logging.getLogger(__name__)

Stage = Literal["all", "translate", "train"]


def store_for(cfg: Config) -> Store:
    """Where the distilled corpus goes: ``distill.output``, else ``distilled/`` in the
    student's run directory (a folder training never writes nor deletes)."""
    return Store(cfg.distill.output or Path(cfg.training.run_dir) / "distilled")


def check_teacher(teacher_dir: Path, cfg: Config) -> Config:
    """The teacher's config, after checking the run is usable and speaks the same languages."""
    RunDir(teacher_dir).check_complete()
    teacher_cfg = config_mod.load(RunDir(teacher_dir).config_path)
    pair = (cfg.data.src_lang, cfg.data.tgt_lang)
    if (teacher_cfg.data.src_lang, teacher_cfg.data.tgt_lang) != pair:
        raise ConfigError(f"--teacher {teacher_dir}: translates {teacher_cfg.data.src_lang} -> "
                          f"{teacher_cfg.data.tgt_lang}, the student config {pair[0]} -> "
                          f"{pair[1]} (data.src_lang / data.tgt_lang)")
    if Path(cfg.training.run_dir).resolve() == Path(teacher_dir).resolve():
        raise ConfigError(f"training.run_dir {cfg.training.run_dir}: is the teacher's run "
                          "directory; give the student its own")
    return teacher_cfg


def run(teacher_dir: Path, cfg: Config, stage: Stage = "all", resume: bool = False,
        overwrite: bool = False, rank: Rank | None = None) -> dict:
    """Run ``stage``; returns what it did: the corpus' groups and, when trained, the
    trainer's summary."""
    rank = rank or from_env()
    teacher_cfg = check_teacher(teacher_dir, cfg)
    store = store_for(cfg)
    if resume and stage == "translate":
        raise ConfigError("--resume continues the student's training: use it with --stage "
                          "train or all (a translation always continues where it stopped)")
    groups: list[Group]
    if stage in ("all", "translate"):
        groups = teacher.translate(teacher_dir, cfg, store, rank)
    else:
        groups = store.groups()
    out: dict = {"corpus": str(store.corpus_dir), "groups": [
        {"prefix": str(g.prefix), "domains": g.domains, "rows": g.rows} for g in groups]}
    if stage in ("all", "train"):
        student_cfg = student.student_config(cfg, teacher_cfg, groups)
        out["summary"] = student.train(student_cfg, teacher_dir, resume=resume,
                                       overwrite=overwrite, rank=rank)
    return out
