"""Ending a run by what it measures: targets that hold, or a metric that stopped improving.

Both watch the metrics of each validation (`val_*` losses, and the listening scores when
they were measured at that step). A check happens only at a validation where every metric
it needs was measured; the counters live in the checkpoint, so a stopped and resumed run
ends exactly where the unbroken one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from voxtrain.config import TrainingConfig, metric_direction


def _holds(value: float, threshold: float, direction: str) -> bool:
    return value <= threshold if direction == "below" else value >= threshold


@dataclass
class StopDecision:
    cause: str  # "targets_reached" | "early_stop"
    reason: str


@dataclass
class StopRules:
    """The state of the targets and the early stop, fed once per validation."""

    targets: dict[str, tuple[float, str]]
    hold: int
    early_metric: str | None = None
    patience: int = 0
    min_delta: float = 0.0
    held: int = 0  # consecutive checks on which every target held
    early_best: float | None = None
    early_stale: int = 0  # checks since the early-stop metric last improved

    @classmethod
    def from_config(cls, training: TrainingConfig) -> StopRules:
        early = training.early_stop
        return cls(training.target_specs(), training.targets_hold,
                   early.metric if early else None, early.patience if early else 0, early.min_delta if early else 0.0)

    @property
    def active(self) -> bool:
        return bool(self.targets) or self.early_metric is not None

    def observe(self, metrics: dict[str, float]) -> StopDecision | None:
        """The metrics measured at one validation; a decision when the run should end here."""
        metrics = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        reached = self._check_targets(metrics)
        if reached is not None:
            return reached
        return self._check_early_stop(metrics)

    def _check_targets(self, metrics: dict[str, float]) -> StopDecision | None:
        if not self.targets or not all(m in metrics for m in self.targets):
            return None
        if all(_holds(metrics[m], t, d) for m, (t, d) in self.targets.items()):
            self.held += 1
        else:
            self.held = 0
        if self.held < self.hold:
            return None
        met = ", ".join(f"{m} {metrics[m]:.4g} {'<=' if d == 'below' else '>='} {t:g}"
                        for m, (t, d) in self.targets.items())
        return StopDecision("targets_reached", f"target reached: {met} on {self.held} evaluations in a row")

    def _check_early_stop(self, metrics: dict[str, float]) -> StopDecision | None:
        metric = self.early_metric
        if metric is None or metric not in metrics:
            return None
        value, sign = metrics[metric], 1.0 if metric_direction(metric) == "below" else -1.0
        if self.early_best is None or sign * (self.early_best - value) > self.min_delta:
            self.early_best, self.early_stale = value, 0
            return None
        self.early_stale += 1
        if self.early_stale < self.patience:
            return None
        return StopDecision("early_stop", f"early stop: {metric} has not improved by more than {self.min_delta:g} "
                                          f"on {self.early_stale} evaluations in a row (best {self.early_best:.4g})")

    def state(self) -> dict[str, Any]:
        return {"held": self.held, "early_best": self.early_best, "early_stale": self.early_stale}

    def restore(self, state: dict[str, Any] | None) -> None:
        """Counters from a checkpoint (none in checkpoints older than the rules: a fresh count)."""
        state = state or {}
        self.held = int(state.get("held", 0))
        self.early_best = state.get("early_best")
        self.early_stale = int(state.get("early_stale", 0))
