"""The run directory and its checkpoints: what a training run leaves on disk.

:mod:`translate.runs.rundir` spells every file name of a run directory once (config,
tokenizer, checkpoints, snapshots, metrics, summary) and checks that a directory is a complete
run; :mod:`translate.runs.checkpoint` writes checkpoints atomically and loads them with
``weights_only=True``, refusing files that are not checkpoints with one line.

Training writes here and inference reads here, so neither imports the other.
May import: ``translate.config``, ``translate.errors``.
"""
