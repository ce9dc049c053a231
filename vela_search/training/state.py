"""The state of a training run that advances with each step and goes into checkpoints.

The step loop (:mod:`vela_search.training.loop`) advances it, checkpoints save it and a resumed run restores
it, and the training record (:mod:`vela_search.training.record`) reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunState"]


@dataclass
class RunState:
    """What advances with each step and goes into checkpoints."""

    total_steps: int
    steps_per_epoch: int
    step: int = 0
    loss_curve: list[float] = field(default_factory=list)
    lr_curve: list[float] = field(default_factory=list)
    eval_before: dict[str, Any] | None = None
    eval_after: dict[str, Any] | None = None
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    wall_before: float = 0.0

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's saved state (see :meth:`to_json`)."""
        self.step = int(saved["step"])
        self.loss_curve = list(saved["loss_curve"])
        self.lr_curve = list(saved.get("lr_curve", []))
        self.eval_before = saved.get("eval_before")
        self.eval_history = list(saved.get("eval_history", []))
        self.wall_before = float(saved.get("wall_time_s", 0.0))

    def to_json(self, identity: dict[str, Any], *, wall_time_s: float) -> dict[str, Any]:
        """The state as a checkpoint saves it, with the run's identity (checked on resume)."""
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "loss_curve": self.loss_curve,
            "lr_curve": self.lr_curve,
            "eval_before": self.eval_before,
            "eval_history": self.eval_history,
            "wall_time_s": wall_time_s,
            "run": identity,
        }
