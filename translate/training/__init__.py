"""Training: from a config to a trained run directory.

Data preparation for a run, losses, the trainer loop, validation and early stopping, schedules,
snapshots and averaging, torchrun/DDP, the batch prefetch thread and progress lines.
May import: ``translate.config``, ``translate.runtime``, ``translate.data``, ``translate.model``,
``translate.runs``, ``translate.tracking``, ``translate.search``. Never ``translate.inference``.
"""
