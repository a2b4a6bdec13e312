"""One reading of a run directory, behind `voxtrain status`, the monitor and the report page:
its metrics records, its config.yaml (through the config models), and what follows from
both, computed here once so that every view of the run states the same facts: the
wall-clock speed and, for every target, its newest value and forecast.

Never raises for a damaged run: a missing or invalid config.yaml is `config_error`, unreadable
metrics lines are counted. No torch, numpy or rich: numpy is imported only to forecast a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import MetricsTail, Trajectory, number, trajectory

if TYPE_CHECKING:
    from voxtrain.config import Config
    from voxtrain.forecast import Forecast

# Train records of the newest session the wall-clock speed is averaged over.
RATE_WINDOW_RECORDS = 20


@dataclass
class TargetForecast:
    """One target of the run's config: its newest value and when the forecast says it holds."""

    metric: str
    threshold: float
    direction: str  # "below" | "above"
    latest: tuple[int, float] | None  # (step, value) of the newest finite value
    forecast: Forecast | None = None
    text: str = ""  # the forecast in words (with the time left at the run's speed), or why there is none

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "target": self.threshold, "direction": self.direction,
                "value": self.latest[1] if self.latest else None,
                "forecast": self.forecast.to_json() if self.forecast else None, "text": self.text}


@dataclass
class RunView:
    """A run directory as read at one moment."""

    run: RunDir
    records: list[dict]  # every whole record of metrics.jsonl, in order
    traj: Trajectory  # the same records after resumes
    bad_lines: int = 0  # unreadable lines of metrics.jsonl, skipped
    torn_tail: bool = False  # its last line is incomplete (being written, or the writer was killed)
    config: Config | None = None
    config_error: str = ""  # why config.yaml exists but gave no config
    step: int | None = None  # the newest step recorded (train, start, stop or checkpoint_saved)
    steps_per_s: float | None = None  # wall clock, validation and saving included
    targets: list[TargetForecast] = field(default_factory=list)


def read_run(run: RunDir | Path | str, tail: MetricsTail | None = None) -> RunView:
    """Read `run` once. Pass the same `tail` on every refresh to read metrics.jsonl incrementally."""
    rundir = run if isinstance(run, RunDir) else RunDir(Path(run))
    if tail is None or tail.path != rundir.metrics:
        tail = MetricsTail(rundir.metrics)
    records = tail.read()
    traj = trajectory(records)
    config, config_error = _read_config(rundir)
    view = RunView(rundir, records, traj, tail.bad_lines, tail.torn_tail, config, config_error)
    view.step = traj.last_step_record["step"] if traj.last_step_record else None
    view.steps_per_s = wall_clock_speed(traj)
    view.targets = _targets(config, traj, view.step, view.steps_per_s)
    return view


def _read_config(run: RunDir) -> tuple[Config | None, str]:
    """The run's config.yaml through the config models, or None and why (nothing when absent)."""
    if not run.config.is_file():
        return None, ""
    from voxtrain.config import load_config

    try:
        return load_config(run.config), ""
    except Exception as err:  # ConfigError, or an OSError while reading: a view of the run still shows the rest
        return None, str(err)


def wall_clock_speed(traj: Trajectory) -> float | None:
    """Steps per second over the newest session's recent train records, by the wall clock: it
    includes validation and saving, which the trainer's own steps_per_s (compute time only)
    leaves out, so ETAs and forecasts in hours hold. The trainer's figure without two records."""
    recent = traj.session_train[-RATE_WINDOW_RECORDS:]
    if len(recent) >= 2:
        t0, t1 = number(recent[0].get("time")), number(recent[-1].get("time"))
        if t0 is not None and t1 is not None and t1 > t0 and recent[-1]["step"] > recent[0]["step"]:
            return (recent[-1]["step"] - recent[0]["step"]) / (t1 - t0)
    logged = number(traj.train[-1].get("steps_per_s")) if traj.train else None
    return logged if logged is not None and math.isfinite(logged) and logged > 0 else None


def _targets(config: Config | None, traj: Trajectory, step: int | None,
             speed: float | None) -> list[TargetForecast]:
    if config is None:
        return []
    training = config.training
    rows = []
    for metric, (threshold, direction) in training.target_specs().items():
        history = traj.history(metric)
        row = TargetForecast(metric, threshold, direction, history[-1] if history else None)
        try:
            from voxtrain.forecast import forecast_target

            # hold: the trainer stops on targets_hold evaluations in a row, so "met" means that too.
            row.forecast = forecast_target([s for s, _ in history], [v for _, v in history], threshold, direction,
                                           horizon=training.max_steps, metric=metric, hold=training.targets_hold)
            row.text = row.forecast.describe(step, speed)
        except Exception as err:  # a forecast is advice (numpy missing, a bug): its failure is shown, never raised
            row.text = f"{metric} {direction} {threshold:g}: no forecast ({type(err).__name__}: {err})"
        rows.append(row)
    return rows
