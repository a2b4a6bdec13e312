"""Which checkpoint is the best: one rule, applied by the trainer at each validation and
replayed from metrics.jsonl by the listing, so both always name the same step.

The rule ranks by `checkpoint.best_by`: the validation mel loss, or a listening score
measured at that validation. Where the score is missing (its scorer failed, or the run
records no scores at all because the `eval` extra is not installed) the validation is
judged by its mel loss against the best one's, and the score bar stays as it was. On a tie
the earlier step stays best.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxtrain.artifacts.metrics_format import number, trajectory

if TYPE_CHECKING:
    from voxtrain.config import Config

VAL_MEL = "val_mel"


class BestTracker:
    def __init__(self, metric: str = VAL_MEL, direction: str = "below", step: int | None = None,
                 value: float | None = None, val_mel: float | None = None):
        self.metric, self.direction = metric, direction
        self.step, self.value, self.val_mel = step, value, val_mel

    def _better(self, value: float, than: float) -> bool:
        return value < than if self.direction == "below" else value > than

    def consider(self, step: int, val_mel: float | None, scores: dict[str, Any] | None = None) -> bool:
        """One validation (and the listening scores measured with it); True when it is the new best."""
        value = val_mel if self.metric == VAL_MEL else number((scores or {}).get(self.metric))
        if value is not None and math.isfinite(value):
            if self.value is not None and not self._better(value, self.value):
                return False
            self.step, self.value, self.val_mel = step, float(value), val_mel
            return True
        if val_mel is None or not math.isfinite(val_mel) or (self.val_mel is not None and not val_mel < self.val_mel):
            return False
        self.step, self.val_mel = step, float(val_mel)
        return True

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "step": self.step, "value": self.value, "val_mel": self.val_mel}

    @classmethod
    def from_state(cls, saved: dict[str, Any], metric: str, direction: str) -> BestTracker:
        """The tracker a checkpoint saved (its `best`); a resume that changed best_by keeps only
        the step and its mel loss."""
        if saved.get("metric") == metric:
            return cls(metric, direction, saved.get("step"), saved.get("value"), saved.get("val_mel"))
        val_mel = saved.get("val_mel")
        return cls(metric, direction, saved.get("step"), val_mel if metric == VAL_MEL else None, val_mel)


def best_from_records(records: list[dict], metric: str = VAL_MEL, direction: str = "below") -> BestTracker:
    """The best of a run, replayed from its metrics records (redone steps counted once). When
    the run recorded listening scores, only the validations that were scored are candidates,
    as in the trainer."""
    best = BestTracker(metric, direction)
    t = trajectory(records)
    scored = {r["step"]: r for r in t.evals} if metric != VAL_MEL else {}
    for r in t.val:
        if scored and r["step"] not in scored:
            continue
        best.consider(r["step"], number(r.get("loss_mel")), scored.get(r["step"]))
    return best


def best_by_of(config: Config | None) -> tuple[str, str]:
    """(metric, direction) of a config's checkpoint.best_by; val_mel without a config."""
    from voxtrain.metrics import metric_direction

    metric = config.checkpoint.best_by if config is not None else VAL_MEL
    return metric, metric_direction(metric)


def run_best_by(config_path: Path) -> tuple[str, str]:
    """(metric, direction) of a run's checkpoint.best_by, its config.yaml read through the
    config models as every reader of a run reads it; val_mel when the file is missing or
    invalid (runs older than best_by)."""
    from voxtrain.config import load_config
    from voxtrain.errors import VoxtrainError

    try:
        return best_by_of(load_config(Path(config_path)) if Path(config_path).is_file() else None)
    except (OSError, VoxtrainError):
        return VAL_MEL, "below"
