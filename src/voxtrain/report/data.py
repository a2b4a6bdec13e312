"""Everything the report page shows, gathered from a run directory's files alone.

Each piece may be missing or damaged while a run trains (no evaluation yet, no checkpoint, a
torn last metrics line, a config that no longer validates): a missing piece is an empty list
and a damaged one a note on the page, never an exception, because the trainer refreshes the
page at every evaluation and a report must not end a training run. The run is read by
`artifacts.run_view.read_run`, as for `voxtrain status`, so both state the same speed and
forecasts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from voxtrain.artifacts.checkpoints import CheckpointInfo, list_checkpoints
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import Trajectory, eval_scores
from voxtrain.artifacts.run_view import RunView, TargetForecast, read_run
from voxtrain.atomic import is_temp_file
from voxtrain.config import Config
from voxtrain.metrics import SCORES, metric_direction

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
class ReportData:
    view: RunView
    score_metrics: list[str]
    checkpoints: list[CheckpointInfo]
    samples: list[SampleGroup]  # newest first
    alignment: tuple[int, Path] | None
    notes: list[str] = field(default_factory=list)

    @property
    def run(self) -> RunDir:
        return self.view.run

    @property
    def traj(self) -> Trajectory:
        return self.view.traj

    @property
    def config(self) -> Config | None:
        return self.view.config

    @property
    def current_step(self) -> int | None:
        return self.view.step

    @property
    def steps_per_s(self) -> float | None:
        return self.view.steps_per_s

    @property
    def targets(self) -> list[TargetForecast]:
        return self.view.targets

    def eval_at(self, step: int) -> dict[str, Any] | None:
        return next((r for r in self.traj.evals if r["step"] == step), None)

    def val_at(self, step: int) -> dict[str, Any] | None:
        return next((r for r in self.traj.val if r["step"] == step), None)


def gather(run: RunDir) -> ReportData:
    view = read_run(run)
    notes = _notes(view)
    try:
        checkpoints = list_checkpoints(run, view.records)
    except OSError as err:
        checkpoints = []
        notes.append(f"checkpoints could not be listed: {err}")
    return ReportData(
        view=view, score_metrics=score_metrics(view.traj.evals), checkpoints=checkpoints,
        samples=_samples(run, view.traj, view.config), alignment=_alignment(run, view.traj), notes=notes,
    )


def _notes(view: RunView) -> list[str]:
    """What is missing or damaged in the run's files, in words."""
    run, notes = view.run, []
    if not run.metrics.exists():
        notes.append(f"{run.metrics.name} does not exist yet: the run has recorded nothing.")
    if view.bad_lines:
        notes.append(f"{run.metrics.name}: {view.bad_lines} unreadable line(s) skipped.")
    if view.torn_tail:
        notes.append(f"{run.metrics.name}: the last line is incomplete (being written, or the writer was killed).")
    if view.config_error:
        notes.append(f"{run.config.name} could not be loaded, so targets are not shown: {view.config_error}")
    elif view.config is None:
        notes.append(f"{run.config.name} not found: no targets or sentence texts shown.")
    return notes


def score_metrics(evals: list[dict]) -> list[str]:
    """The listening scores the eval records hold a finite number for: known ones in their
    usual order, then any other."""
    present: list[str] = []
    for r in evals:
        present += [k for k, v in eval_scores(r).items() if k not in present and math.isfinite(v)]
    known = [m for m in SCORES if m in present]
    return known + sorted(m for m in present if m not in SCORES)


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
