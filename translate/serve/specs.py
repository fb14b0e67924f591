"""What each ``--model`` names, read before anything loads: a name, run directories, a pair.

The registry needs every model's pair at start - to list ``/languages``, find pivots and
refuse a bad request at once - but loads a model only when it is used. So a spec is read
from the run's ``config.yaml`` alone; a directory that is no usable run fails the start
here, in one line, rather than at some later first request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from translate import config as config_mod
from translate.runs.checkpoint import CheckpointError
from translate.runs.rundir import RunDir

__all__ = ["ModelSpec", "model_specs", "read_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """What is known of a model before it loads: its name, run directories and pair.

    Several run directories (``--model A,B``) are one ensemble translating one pair.
    """

    name: str
    run_dirs: tuple[Path, ...]
    source: str
    target: str
    beam: int  # the beam it decodes with (--beam, else the run's inference.beam_size)


def _config(run_dir: Path) -> config_mod.Config:
    run = RunDir(run_dir)
    try:
        run.check_complete()
        cfg = config_mod.load(run.config_path)
    except (CheckpointError, config_mod.ConfigError) as err:
        raise config_mod.ConfigError(f"--model: {err}") from None
    return cfg


def read_spec(value: str | Path, beam: int | None = None) -> ModelSpec:
    """The spec of one ``--model`` value: a run directory, or ``A,B`` (an ensemble)."""
    dirs = tuple(Path(p).resolve() for p in str(value).split(",") if p.strip())
    if not dirs:
        raise config_mod.ConfigError(f"--model {value!r}: expected a run directory")
    configs = {d: _config(d) for d in dirs}
    pairs = {d: (c.data.src_lang, c.data.tgt_lang) for d, c in configs.items()}
    if len(set(pairs.values())) > 1:
        listed = ", ".join(f"{d} {a}->{b}" for d, (a, b) in pairs.items())
        raise config_mod.ConfigError(f"--model {value}: an ensemble's models translate one "
                                     f"pair, these do not ({listed})")
    source, target = pairs[dirs[0]]
    beam = beam or configs[dirs[0]].inference.beam_size
    return ModelSpec(",".join(d.name for d in dirs), dirs, source, target, beam)


def model_specs(values: Sequence[str | Path], beam: int | None = None) -> list[ModelSpec]:
    """The specs of every ``--model``; a folder that is no run directory stands for each
    run directory inside it (those with a ``config.yaml``), in name order."""
    specs = []
    for value in values:
        path = Path(value)
        if "," not in str(value) and path.is_dir() and not RunDir(path).config_path.exists():
            runs = sorted(p for p in path.iterdir() if RunDir(p).config_path.is_file())
            if not runs:
                raise config_mod.ConfigError(f"--model {value}: neither a run directory nor "
                                             "a folder of run directories (no config.yaml)")
            specs.extend(read_spec(p, beam) for p in runs)
        else:
            specs.append(read_spec(value, beam))
    return specs
