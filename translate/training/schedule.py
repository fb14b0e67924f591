"""Learning-rate schedules: linear warm-up, then inverse square root, plateau or constant.

torch's own schedulers do the work; this wrapper only gives the trainer one object with a
per-step and a per-validation hook, and one state dict to checkpoint.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from translate.config import TrainingConfig


class Schedule:
    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainingConfig) -> None:
        self.kind = cfg.scheduler
        warmup = max(cfg.warmup_steps, 1)
        self.warmup = warmup

        def factor(step: int) -> float:
            step = max(step, 1)
            if step < warmup:
                return step / warmup
            if self.kind == "inverse_sqrt":
                return (warmup / step) ** 0.5
            return 1.0

        self.per_step = LambdaLR(optimizer, factor)
        self.plateau = (ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                          patience=cfg.plateau_patience)
                        if self.kind == "plateau" else None)
        self.steps = 0

    def step_batch(self) -> None:
        """After each optimizer step; the plateau schedule stops here once warmed up."""
        self.steps += 1
        if self.plateau is None or self.steps <= self.warmup:
            self.per_step.step()

    def step_validation(self, valid_loss: float) -> None:
        if self.plateau is not None and self.steps > self.warmup:
            self.plateau.step(valid_loss)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "per_step": self.per_step.state_dict(),
                "plateau": self.plateau.state_dict() if self.plateau else {}}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig) -> Schedule:
    return Schedule(optimizer, cfg)
