"""The two stages in order, as ``python -m translate.distill`` runs them.

``translate`` makes (or completes) the distilled corpus; ``train`` trains the student on it;
``all`` does both. Each can run alone: a killed translation is restarted by running the
command again, a killed student by ``--stage train --resume``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from translate import config as config_mod
from translate.config import Config, ConfigError
from translate.config.parse import parse_yaml
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


def teacher_dirs(teachers: str | Path | Sequence[str | Path]) -> list[Path]:
    """The teachers' run directories: one, several (an ensemble), or ``"A,B"``."""
    items = [teachers] if isinstance(teachers, (str, Path)) else list(teachers)
    out = [Path(p.strip()) for item in items
           for p in ([str(item)] if Path(item).is_dir() else str(item).split(","))]
    if not out or any(not str(p) or str(p) == "." for p in out):
        raise ConfigError(f"--teacher {teachers!r}: an empty run directory name")
    return out


def student_overrides(config_path: str | Path, teachers: Sequence[Path],
                      overrides: Sequence[str]) -> list[str]:
    """``overrides``, after the first teacher's whole ``data`` section when the student's
    config file names no ``data``: a student config can hold only a model and a training
    budget, and distills on its teacher's sources, languages and validation sets."""
    path = config_mod.resolve_path(config_path)
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, ConfigError):
        return list(overrides)  # loading the config names what is wrong with it
    if not isinstance(raw, dict) or "data" in raw:
        return list(overrides)
    first = RunDir(teachers[0])
    first.check_complete()
    data = config_mod.to_dict(config_mod.load(first.config_path))["data"]
    log.info("distill: %s names no data; the student takes the teacher's (%s -> %s, %d "
             "training sources)", path, data["src_lang"], data["tgt_lang"], len(data["train"]))
    return [f"data={json.dumps(data)}", *overrides]


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


def run(teachers: str | Path | Sequence[str | Path], cfg: Config, stage: Stage = "all",
        resume: bool = False, overwrite: bool = False, rank: Rank | None = None) -> dict:
    """Run ``stage`` with one teacher or an ensemble of several (decoded as one, with the
    first one's tokenizer and inference settings); returns what it did: the corpus' groups
    and, when trained, the trainer's summary."""
    rank = rank or from_env()
    teachers = teacher_dirs(teachers)
    teacher_cfg = [check_teacher(t, cfg) for t in teachers][0]
    store = store_for(cfg)
    if resume and stage == "translate":
        raise ConfigError("--resume continues the student's training: use it with --stage "
                          "train or all (a translation always continues where it stopped)")
    groups: list[Group]
    if stage in ("all", "translate"):
        groups = teacher.translate(teachers, cfg, store, rank)
    else:
        groups = store.groups()
    out: dict = {"corpus": str(store.corpus_dir), "groups": [
        {"prefix": str(g.prefix), "domains": g.domains, "rows": g.rows} for g in groups]}
    if stage in ("all", "train"):
        student_cfg = student.student_config(cfg, teacher_cfg, groups)
        out["summary"] = student.train(student_cfg, teachers[0], resume=resume,
                                       overwrite=overwrite, rank=rank)
    return out
