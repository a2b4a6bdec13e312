"""Everything the report page shows, gathered from a run directory's files alone.

Each piece may be missing or damaged while a run trains (no evaluation yet, no checkpoint, a
torn last metrics line, a config that no longer validates): a missing piece is an empty list
and a damaged one a note on the page, never an exception, because the trainer refreshes the
page at every evaluation and a report must not end a training run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxtrain.artifacts.checkpoints import CheckpointInfo, list_checkpoints
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.records import MetricsTail, Trajectory, number, trajectory
from voxtrain.atomic import is_temp_file
from voxtrain.config import SCORE_METRICS, Config, load_config, metric_direction

if TYPE_CHECKING:
    from voxtrain.forecast import Forecast

# Fields of an eval record that are bookkeeping, not listening scores.
EVAL_BOOKKEEPING = frozenset({"type", "time", "step", "seconds", "sentences", "errors"})
# Train records averaged for the speed a forecast turns into wall-clock time.
SPEED_WINDOW_RECORDS = 20
HELDOUT_FILE = "heldout_sentences.txt"


@dataclass
class Clip:
    label: str
    path: Path
    size: int


@dataclass
class SampleGroup:
    """The WAVs of one evaluation or validation pass."""

    step: int
    kind: str  # "evaluation" (listening-score clips) or "validation"
    clips: list[Clip]


@dataclass
class TargetRow:
    metric: str
    threshold: float
    direction: str  # "below" | "above"
    latest: tuple[int, float] | None
    forecast: Forecast | None = None
    text: str = ""  # the forecast in words, or why there is none


@dataclass
class ReportData:
    run: RunDir
    traj: Trajectory
    config: Config | None
    current_step: int | None
    steps_per_s: float | None
    score_metrics: list[str]
    targets: list[TargetRow]
    checkpoints: list[CheckpointInfo]
    samples: list[SampleGroup]  # newest first
    alignment: tuple[int, Path] | None
    notes: list[str] = field(default_factory=list)

    def eval_at(self, step: int) -> dict[str, Any] | None:
        return next((r for r in self.traj.evals if r["step"] == step), None)

    def val_at(self, step: int) -> dict[str, Any] | None:
        return next((r for r in self.traj.val if r["step"] == step), None)


def gather(run: RunDir) -> ReportData:
    notes: list[str] = []
    tail = MetricsTail(run.metrics)
    records = tail.read()
    if not run.metrics.exists():
        notes.append(f"{run.metrics.name} does not exist yet: the run has recorded nothing.")
    if tail.bad_lines:
        notes.append(f"{run.metrics.name}: {tail.bad_lines} unreadable line(s) skipped.")
    if tail.torn_tail:
        notes.append(f"{run.metrics.name}: the last line is incomplete (being written, or the writer was killed).")
    traj = trajectory(records)
    config = _config(run, notes)
    current = traj.last_step_record["step"] if traj.last_step_record else None
    speed = _speed(traj.session_train)
    try:
        checkpoints = list_checkpoints(run, records)
    except OSError as err:
        checkpoints = []
        notes.append(f"checkpoints could not be listed: {err}")
    return ReportData(
        run=run, traj=traj, config=config, current_step=current, steps_per_s=speed,
        score_metrics=score_metrics(traj.evals), targets=_targets(config, traj, current, speed),
        checkpoints=checkpoints, samples=_samples(run, traj, config), alignment=_alignment(run, traj),
        notes=notes,
    )


def _config(run: RunDir, notes: list[str]) -> Config | None:
    if not run.config.is_file():
        notes.append(f"{run.config.name} not found: no targets or sentence texts shown.")
        return None
    try:
        return load_config(run.config)
    except Exception as err:  # ConfigError, or an OSError while reading it
        notes.append(f"{run.config.name} could not be loaded, so targets are not shown: {err}")
        return None


def _speed(session_train: list[dict]) -> float | None:
    """Wall-clock steps per second over the newest session's recent train records (validation
    and saving included, so a forecast in hours holds); the trainer's own figure without them."""
    recent = session_train[-SPEED_WINDOW_RECORDS:]
    if len(recent) >= 2:
        t0, t1 = number(recent[0].get("time")), number(recent[-1].get("time"))
        if t0 is not None and t1 is not None and t1 > t0 and recent[-1]["step"] > recent[0]["step"]:
            return (recent[-1]["step"] - recent[0]["step"]) / (t1 - t0)
    last = number(recent[-1].get("steps_per_s")) if recent else None
    return last if last is not None and math.isfinite(last) and last > 0 else None


def score_metrics(evals: list[dict]) -> list[str]:
    """The listening scores the eval records hold a number for: known ones in their usual
    order, then any other numeric field."""
    present: list[str] = []
    for r in evals:
        for key, value in r.items():
            if key in EVAL_BOOKKEEPING or key in present or isinstance(value, bool):
                continue
            v = number(value)
            if v is not None and math.isfinite(v):
                present.append(key)
    known = [m for m in SCORE_METRICS if m in present]
    return known + sorted(m for m in present if m not in SCORE_METRICS)


def _targets(config: Config | None, traj: Trajectory, current: int | None, speed: float | None) -> list[TargetRow]:
    if config is None:
        return []
    rows = []
    for metric, (threshold, direction) in config.training.target_specs().items():
        history = traj.history(metric)
        row = TargetRow(metric, threshold, direction, history[-1] if history else None)
        row.forecast, row.text = _forecast(metric, history, threshold, direction, config.training.max_steps,
                                           current, speed)
        rows.append(row)
    return rows


def _forecast(metric: str, history: list[tuple[int, float]], threshold: float, direction: str, horizon: int,
              current: int | None, speed: float | None) -> tuple[Forecast | None, str]:
    try:
        from voxtrain.forecast import forecast_target
    except ImportError as err:
        return None, f"no forecast: {err}"
    try:
        fc = forecast_target([s for s, _ in history], [v for _, v in history], threshold, direction,
                             horizon=horizon, metric=metric)
        return fc, fc.describe(current, speed)
    except Exception as err:  # a forecast is advice: its failure is shown, never raised
        return None, f"no forecast ({type(err).__name__}: {err})"


def _wavs(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.glob("*.wav") if p.is_file() and not is_temp_file(p))
    except OSError:
        return []


def _clip(path: Path, label: str) -> Clip | None:
    try:
        return Clip(label, path, path.stat().st_size)
    except OSError:  # deleted between listing and stat
        return None


def heldout_sentences(config: Config | None) -> list[str]:
    """The texts of the listening-score clips, when they are voxtrain's own held-out list (the
    first `evaluation.sentences` of it, in order); a run's own sentences file may have moved
    since, so its clips keep their file names."""
    if config is None or config.evaluation.sentences_file is not None:
        return []
    try:
        text = resources.files("voxtrain").joinpath("resources").joinpath(HELDOUT_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    lines = [ln.strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")][: config.evaluation.sentences]


def _samples(run: RunDir, traj: Trajectory, config: Config | None) -> list[SampleGroup]:
    """Sample groups newest first; at one step the listening-score clips before the validation ones."""
    texts = {
        "evaluation": {run.sample_name(i): s for i, s in enumerate(heldout_sentences(config))},
        "validation": {run.sample_name(i): s for i, s in enumerate(config.training.validation_sentences)}
        if config else {},
    }
    groups = []
    steps = sorted({r["step"] for r in traj.evals} | {r["step"] for r in traj.val}, reverse=True)
    for step in steps:
        for kind, directory in (("evaluation", run.eval_sample_dir(step)), ("validation", run.sample_dir(step))):
            clips = [c for p in _wavs(directory) if (c := _clip(p, texts[kind].get(p.name, ""))) is not None]
            if clips:
                groups.append(SampleGroup(step, kind, clips))
    return groups


def _alignment(run: RunDir, traj: Trajectory) -> tuple[int, Path] | None:
    for step in sorted({r["step"] for r in traj.val}, reverse=True):
        path = run.alignment_image(step)
        if path.is_file():
            return step, path
    return None


def direction_of(metric: str) -> str:
    """Which way a plotted metric improves ("below" for unknown names: they are losses or errors)."""
    try:
        return metric_direction(metric)
    except ValueError:
        return "below"
