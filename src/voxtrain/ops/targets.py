"""What a run's listening scores and targets look like from outside: the newest scores,
the best checkpoint's metric, and a forecast for every target (voxtrain.forecast: a
saturating fit with an interval, never a straight line)."""

from __future__ import annotations

from typing import Any

from voxtrain.artifacts.records import Trajectory, number

# Fields of an eval record that are not scores.
_NOT_SCORES = frozenset({"type", "time", "step", "seconds", "sentences", "texts", "errors", "refused"})


def latest_scores(traj: Trajectory) -> tuple[int | None, dict[str, float], float | None]:
    """(step, scores, seconds spent) of the newest listening evaluation."""
    if not traj.evals:
        return None, {}, None
    r = traj.evals[-1]
    scores = {k: v for k, v in ((k, number(v)) for k, v in r.items() if k not in _NOT_SCORES) if v is not None}
    return r["step"], scores, number(r.get("seconds"))


def _target_specs(config: dict | None) -> dict[str, tuple[float, str]]:
    from voxtrain.metrics import metric_direction

    targets = ((config or {}).get("training") or {}).get("targets") or {}
    specs = {}
    for metric, spec in targets.items():
        try:
            direction = metric_direction(metric)
        except ValueError:
            continue  # the trainer refuses such a config; the monitor just leaves it out
        if isinstance(spec, dict):
            value, direction = number(spec.get("value")), spec.get("direction") or direction
        else:
            value = number(spec)
        if value is not None:
            specs[metric] = (value, direction)
    return specs


def target_forecasts(config: dict | None, traj: Trajectory, step: int,
                     steps_per_s: float | None) -> list[dict[str, Any]]:
    """For each target of the run's config: its newest value and the forecast of when it holds."""
    specs = _target_specs(config)
    if not specs:
        return []
    from voxtrain.forecast import forecast_target

    training = (config or {}).get("training") or {}
    horizon, hold = number(training.get("max_steps")), int(number(training.get("targets_hold")) or 1)
    rows = []
    for metric, (threshold, direction) in specs.items():
        history = traj.history(metric)
        fc = forecast_target([s for s, _ in history], [v for _, v in history], threshold, direction,
                             horizon=horizon, metric=metric, hold=hold)
        rows.append({"metric": metric, "target": threshold, "direction": direction,
                     "value": history[-1][1] if history else None, "forecast": fc.to_json(),
                     "text": fc.describe(step, steps_per_s)})
    return rows


def target_lines(forecasts: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for f in forecasts]
