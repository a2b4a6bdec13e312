"""Small statistics of a run's records that the snapshot and its warnings share."""

from __future__ import annotations

import math

from voxtrain.artifacts.metrics_format import Trajectory, number

AVG_WINDOW_STEPS = 100
VAL_TREND_RECORDS = 5


def finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def trend(points: list[tuple[float, float]]) -> str | None:
    if len(points) < 2:
        return None
    # A least-squares slope: robust to one noisy point where first-vs-last is not.
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    if abs(slope * (points[-1][0] - points[0][0])) < 1e-3 * (abs(my) or 1.0):  # noise, not a trend
        return "flat"
    return "rising" if slope > 0 else "falling"


def train_avg(train: list[dict], at_step: int) -> float | None:
    values = finite([number(r.get("loss_total")) for r in train if at_step - AVG_WINDOW_STEPS < r["step"] <= at_step])
    return sum(values) / len(values) if values else None


def val_points(traj: Trajectory) -> list[tuple[float, float]]:
    """(step, loss_total) of every validation with a finite loss."""
    return [(float(r["step"]), v) for r in traj.val if (v := number(r.get("loss_total"))) is not None
            and math.isfinite(v)]
