"""``infer --reference REF --wandb``: one scored translation job as a W&B evaluation run.

The run holds what a person comparing models looks for: corpus BLEU and chrF with their
sacrebleu signatures (summary), one row per domain when the references carry domain labels
(``eval/domains``), and every sentence with its chrF (``eval/sentences``, sortable to find
the failures). It is linked to the model artifact that training logged
(``wandb_artifact.json`` in the run directory, or in the downloaded artifact folder) so the
W&B lineage shows which weights produced the scores; an offline run cannot link (W&B
refuses ``use_artifact`` offline) and records the artifact's name in its config instead.

Same rules as training: the mode comes from :func:`translate.tracking.wandb_run.resolve_mode`
(``WANDB_MODE=disabled`` wins, offline without an API key), and a W&B failure never loses
the translations, which are written before this runs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from translate import config as config_mod
from translate.runs.rundir import RunDir
from translate.tracking.dashboard import SENTENCE_COLUMNS, sentence_chrf
from translate.tracking.metrics import bleu_chrf
from translate.tracking.wandb_run import WandbRun, new_run_id, resolve_mode

log = logging.getLogger("translate.tracking.tracker")

MAX_SENTENCE_ROWS = 10_000  # wandb.Table's own row limit; beyond it W&B truncates anyway


def domain_rows(hyps: Sequence[str], refs: Sequence[str],
                domains: Sequence[Sequence[str]]) -> list[list]:
    """``[domain, lines, bleu, chrf]`` per label, scored on the lines carrying it."""
    rows = []
    for label in sorted({d for row in domains for d in row}):
        picked = [i for i, row in enumerate(domains) if label in row]
        s = bleu_chrf([hyps[i] for i in picked], [refs[i] for i in picked])
        rows.append([label, len(picked), s["bleu"], s["chrf"]])
    return rows


def log_evaluation(model_dir: str | os.PathLike[str], sources: Sequence[str],
                   hyps: Sequence[str], refs: Sequence[str],
                   domains: Sequence[Sequence[str]] | None, settings: dict) -> str | None:
    """Log one evaluation run; returns its mode (``online``/``offline``) or None when W&B
    is off. ``settings``: what produced the hypotheses (checkpoint, search options, files),
    stored as the run's config."""
    run_dir = RunDir(model_dir)
    logging_cfg = config_mod.load(run_dir.config_path).logging
    mode = resolve_mode("auto")  # --wandb asked for it; the environment may still say no
    if mode == "disabled":
        print("wandb: disabled by the environment; no evaluation run logged", file=sys.stderr)
        return None
    artifact = run_dir.read_model_artifact()
    root = run_dir.root if os.access(run_dir.root, os.W_OK) else Path.cwd()
    run = WandbRun.start(project=logging_cfg.project, entity=logging_cfg.entity, name=None,
                         root=root, run_id=new_run_id(), resume=False, mode=mode,
                         init_timeout=20.0, job_type="eval",
                         config={**settings, "model_dir": str(run_dir.root),
                                 "model_artifact": artifact and artifact["name"]})
    if run is None:
        return None
    if artifact:
        run.use_artifact(f"{artifact['name']}:best")
    total = bleu_chrf(hyps, refs)
    run.summary({f"eval/{k}": v for k, v in total.items()} | {"eval/lines": len(hyps)})
    if domains is not None:
        rows = domain_rows(hyps, refs, domains)
        run.table("eval/domains", ("domain", "lines", "bleu", "chrf"), rows, step=0)
        run.summary({f"eval/{m}/{r[0]}": r[i] for r in rows for i, m in ((2, "bleu"),
                                                                           (3, "chrf"))})
    n = min(len(hyps), MAX_SENTENCE_ROWS)
    if n < len(hyps):
        log.warning("wandb: eval/sentences holds the first %d of %d lines (W&B's table "
                    "limit)", n, len(hyps))
    scores = sentence_chrf(hyps[:n], refs[:n])
    rows = [[i, sources[i], refs[i], hyps[i], scores[i]] for i in range(n)]
    run.table("eval/sentences", SENTENCE_COLUMNS, rows, step=0)
    run.finish()
    if run.sync_command:
        print(f"wandb: offline evaluation run saved; upload it with: {run.sync_command}",
              file=sys.stderr)
    return run.mode
