"""Everything a person wants to know about a run, computed from its files alone.

Import-light on purpose (no torch, numpy, rich or pydantic): `voxtrain status` must answer at
once and the monitor re-reads a run every few seconds while a trainer saturates the machine.
Checkpoints are therefore listed by name, size and mtime, never loaded; "best" comes from the
validation records by the checkpoint manager's own rule (`artifacts.checkpoints`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voxtrain.artifacts.checkpoints import best_from_records, list_checkpoints, run_best_by
from voxtrain.artifacts.disk import checkpoints_that_fit
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import running_trainer
from voxtrain.artifacts.records import Event, MetricsTail, Trajectory, jsonable, number, step_of, trajectory
from voxtrain.ops.targets import latest_scores, target_forecasts
from voxtrain.ops.trends import RATE_WINDOW_RECORDS, VAL_TREND_RECORDS, train_avg, trend, val_points
from voxtrain.ops.warnings import run_warnings

SPARK_POINTS = 120


@dataclass
class ProcessFacts:
    """The live trainer process as the OS sees it (psutil)."""

    cpu_percent: float
    rss: int  # bytes, the trainer alone
    threads: int
    children: int  # data-loader and prepare workers
    children_rss: int  # bytes, all children together


@dataclass
class CheckpointRow:
    """One rotation checkpoint, from `artifacts.checkpoints.list_checkpoints` (never opened)."""

    step: int
    file: str  # name inside checkpoints/
    time: float  # mtime, seconds since the epoch
    bytes: int
    best: bool  # the step the best-model rule picks from the validation records
    corrupt: bool  # the trainer reported this very file corrupt (a later re-save at the step is not)
    error: str = ""  # why it is corrupt, as the trainer reported it


@dataclass
class RunSnapshot:
    """Facts about one run directory at one moment. Times are seconds since the epoch,
    durations seconds; None means "not known (yet)". Losses may be NaN/Inf: shown, not hidden."""

    run: str  # absolute path of the run directory
    name: str
    now: float  # when the snapshot was taken
    # -- state -------------------------------------------------------------------------
    state: str = "not started"  # running | finished | stopped | dead | not started
    pid: int | None = None  # of the live trainer only
    host: str | None = None
    stop_reason: str | None = None  # of the newest session's stop event
    exit_code: int | None = None
    step: int = 0  # newest step recorded (train, start, stop or checkpoint_saved)
    target_step: int | None = None  # where the current stage of training ends
    max_steps: int | None = None  # where the whole run ends
    epoch: int | None = None
    # -- training losses (after resumes: redone steps count once) ------------------------
    loss: float | None = None  # loss_total of the newest train record
    loss_mel: float | None = None
    loss_avg100: float | None = None  # mean finite loss_total over the last AVG_WINDOW_STEPS steps
    loss_recent: list[float | None] = field(default_factory=list)  # last SPARK_POINTS loss_total values
    lr: float | None = None
    grad_norm: float | None = None
    # -- validation ----------------------------------------------------------------------
    val_loss: float | None = None  # newest finite validation loss_total
    val_loss_mel: float | None = None
    val_step: int | None = None
    val_count: int = 0
    val_trend: str | None = None  # rising | falling | flat over the last VAL_TREND_RECORDS validations
    best_step: int | None = None
    best_val_mel: float | None = None
    best_by: str = "val_mel"  # checkpoint.best_by
    best_value: float | None = None  # the best checkpoint's best_by metric
    # -- listening scores and targets ----------------------------------------------------
    scores: dict[str, float] = field(default_factory=dict)  # the newest evaluation's
    scores_step: int | None = None
    scores_seconds: float | None = None  # what that evaluation cost
    targets: list[dict[str, Any]] = field(default_factory=list)  # per target: value and forecast
    stop_cause: str | None = None  # targets_reached, early_stop, ... of the newest stop event
    # -- speed and time ------------------------------------------------------------------
    steps_per_s: float | None = None  # wall clock, validation and saving included
    frames_per_s: float | None = None  # as the trainer logged it
    eta_target_s: float | None = None  # for a run not training: what it still needs once resumed
    eta_max_s: float | None = None
    started: float | None = None  # the first session's start
    session_started: float | None = None
    sessions: int = 0
    elapsed_s: float | None = None  # up to now while running, else up to the last record
    session_elapsed_s: float | None = None
    last_record_time: float | None = None
    last_record_age_s: float | None = None
    # -- checkpoints and disk ------------------------------------------------------------
    checkpoints: list[CheckpointRow] = field(default_factory=list)  # oldest first
    checkpoints_bytes: int = 0  # every file in checkpoints/, best export included
    last_checkpoint: CheckpointRow | None = None
    disk_free: int = 0  # bytes free on the run's filesystem
    checkpoints_fit: int | None = None  # more saves of the newest one's size; None: no checkpoint or config
    # -- process and health ----------------------------------------------------------------
    process: ProcessFacts | None = None
    gpu: dict[str, Any] | None = None  # the gpu*/cuda* fields of the newest train record
    counts: dict[str, int] = field(default_factory=dict)  # events of `Event.WARNINGS`, by name
    nonfinite_skipped: int = 0  # training steps skipped for a non-finite loss or gradient
    log_file: str | None = None  # the newest trainer log
    metrics_records: int = 0
    metrics_bad_lines: int = 0
    metrics_torn_tail: bool = False  # the last line is still being written (or its writer died)
    warnings: list[str] = field(default_factory=list)  # what a person must act on, in words

    def to_json(self) -> dict[str, Any]:
        """The snapshot as strict JSON data (NaN/Inf as strings, like metrics.jsonl)."""
        return jsonable(dataclasses.asdict(self))


def run_snapshot(run: Path | str, tail: MetricsTail | None = None, now: float | None = None) -> RunSnapshot:
    """Facts about a run directory. Raises FileNotFoundError when `run` is not a directory.

    Pass the same `tail` on every refresh to read the metrics file incrementally.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory at {run}" + (" (it is a file)" if run.exists() else ""))
    rundir = RunDir(run)
    if tail is None or tail.path != rundir.metrics:
        tail = MetricsTail(rundir.metrics)
    records = tail.read()
    traj = trajectory(records)
    config = _read_config(rundir)
    log_file = rundir.latest_log_file()
    snap = RunSnapshot(
        run=str(run.resolve()), name=rundir.name, now=time.time() if now is None else now,
        log_file=str(log_file) if log_file else None, metrics_records=len(records),
        metrics_bad_lines=tail.bad_lines, metrics_torn_tail=tail.torn_tail,
    )
    _fill_state(snap, rundir, records, traj, config)
    _fill_losses(snap, traj)
    _fill_validation(snap, records, traj, rundir)
    _fill_timing(snap, records, traj)
    _fill_checkpoints(snap, rundir, records, config)
    snap.scores_step, snap.scores, snap.scores_seconds = latest_scores(traj)
    snap.targets = target_forecasts(config, traj, snap.step, snap.steps_per_s)
    _fill_health(snap, traj)
    snap.warnings = run_warnings(snap, traj)
    return snap


# -- state ---------------------------------------------------------------------------------
def _read_config(run: RunDir) -> dict | None:
    """The run's resolved config.yaml (the trainer writes every key), or None without one."""
    try:
        data = yaml.safe_load(run.config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _section(config: dict | None, name: str) -> dict:
    value = (config or {}).get(name)
    return value if isinstance(value, dict) else {}


def _fill_state(snap: RunSnapshot, rundir: RunDir, records: list[dict], traj: Trajectory,
                config: dict | None) -> None:
    last_train = traj.train[-1] if traj.train else None
    start = traj.starts[-1] if traj.starts else None

    def latest(key: str) -> Any:
        # A stage's goals travel in every train record; before the first one, the start event has them.
        for source in (last_train, start):
            if source and source.get(key) is not None:
                return source[key]
        return None

    snap.step = traj.last_step_record["step"] if traj.last_step_record else 0
    snap.target_step = latest("target_step")
    snap.max_steps = latest("max_steps") or _section(config, "training").get("max_steps")
    snap.epoch = last_train.get("epoch") if last_train else None
    stop = traj.stop
    snap.stop_reason = stop.get("reason") if stop else None
    snap.stop_cause = stop.get("cause") if stop else None
    snap.exit_code = stop.get("exit_code") if stop else None
    proc = running_trainer(rundir)
    if proc is not None:
        snap.state, snap.pid, snap.host, snap.process = "running", proc.pid, proc.host, _process_facts(proc.pid)
    elif not records:
        snap.state = "not started"
    elif stop is not None:
        done = snap.exit_code == 0 and snap.target_step is not None and snap.step >= snap.target_step
        snap.state = "finished" if done else "stopped"
    else:
        snap.state = "dead"


_PROCESSES: dict[int, Any] = {}  # psutil.Process per pid: cpu_percent needs the previous sample


def _process_facts(pid: int) -> ProcessFacts | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = _PROCESSES.get(pid)
        if proc is None:
            proc = _PROCESSES[pid] = psutil.Process(pid)
            cpu = proc.cpu_percent(interval=0.1)  # first sight: a short real sample, not a 0.0
        else:
            cpu = proc.cpu_percent(interval=None)
        with proc.oneshot():
            rss, threads = proc.memory_info().rss, proc.num_threads()
        children = proc.children(recursive=True)  # data-loader workers hold memory too
        child_rss = 0
        for child in children:
            with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                child_rss += child.memory_info().rss
        return ProcessFacts(cpu, rss, threads, len(children), child_rss)
    except psutil.Error:
        _PROCESSES.pop(pid, None)
        return None


# -- losses and validation -------------------------------------------------------------------
def _fill_losses(snap: RunSnapshot, traj: Trajectory) -> None:
    last = traj.train[-1] if traj.train else None
    snap.loss_recent = [number(r.get("loss_total")) for r in traj.train[-SPARK_POINTS:]]
    snap.loss_avg100 = train_avg(traj.train, snap.step if last is None else last["step"])
    if last is not None:
        snap.loss, snap.loss_mel = number(last.get("loss_total")), number(last.get("loss_mel"))
        snap.lr, snap.grad_norm = number(last.get("lr")), number(last.get("grad_norm"))
        snap.frames_per_s = number(last.get("frames_per_s"))


def _fill_validation(snap: RunSnapshot, records: list[dict], traj: Trajectory, rundir: RunDir) -> None:
    points = val_points(traj)
    snap.val_loss = points[-1][1] if points else None
    snap.val_trend = trend(points[-VAL_TREND_RECORDS:])
    snap.val_count = len(traj.val)
    if traj.val:
        snap.val_loss_mel, snap.val_step = number(traj.val[-1].get("loss_mel")), traj.val[-1]["step"]
    best = best_from_records(records, *run_best_by(rundir.config))
    snap.best_by, snap.best_value = best.metric, best.value
    if best.step is not None:
        snap.best_step, snap.best_val_mel = best.step, best.val_mel
    elif exported := traj.events.get(Event.BEST_EXPORTED):
        # Validation records without loss_mel (older runs): the trainer's own export says which.
        snap.best_step, snap.best_val_mel = step_of(exported[-1]), number(exported[-1].get("val_mel_loss"))


# -- speed and time --------------------------------------------------------------------------
def _speed(session_train: list[dict], last_train: dict | None) -> float | None:
    """Wall-clock steps/s over the session's recent records: it includes validation and saving
    time, which the trainer's own steps_per_s (compute time only) leaves out, so ETAs hold."""
    recent = session_train[-RATE_WINDOW_RECORDS:]
    if len(recent) >= 2:
        t0, t1 = number(recent[0].get("time")), number(recent[-1].get("time"))
        if t0 is not None and t1 is not None and t1 > t0:
            return (recent[-1]["step"] - recent[0]["step"]) / (t1 - t0)
    return number(last_train.get("steps_per_s")) if last_train else None


def _fill_timing(snap: RunSnapshot, records: list[dict], traj: Trajectory) -> None:
    rate = _speed(traj.session_train, traj.train[-1] if traj.train else None)
    snap.steps_per_s = rate

    def eta(goal: Any) -> float | None:
        if not isinstance(goal, int) or rate is None or rate <= 0 or not math.isfinite(rate):
            return None
        return max(goal - snap.step, 0) / rate

    snap.eta_target_s, snap.eta_max_s = eta(snap.target_step), eta(snap.max_steps)
    if not records:
        return
    snap.sessions = len(traj.starts)
    last_time = number(records[-1].get("time"))
    first_time = number((traj.starts[0] if traj.starts else records[0]).get("time"))
    session_time = number(traj.starts[-1].get("time")) if traj.starts else first_time
    # A run that is not training stopped aging at its last record.
    end = snap.now if snap.state == "running" else (last_time or snap.now)
    snap.started, snap.session_started = first_time, session_time
    snap.elapsed_s = end - first_time if first_time is not None else None
    snap.session_elapsed_s = end - session_time if session_time is not None else None
    snap.last_record_time = last_time
    snap.last_record_age_s = snap.now - last_time if last_time else None


# -- checkpoints and disk --------------------------------------------------------------------
def _disk_margin_mb(config: dict | None) -> float | None:
    margin = number(_section(config, "checkpoint").get("disk_margin_mb"))
    return margin if margin is not None and math.isfinite(margin) and margin >= 0 else None


def _fill_checkpoints(snap: RunSnapshot, rundir: RunDir, records: list[dict], config: dict | None) -> None:
    snap.checkpoints = [
        CheckpointRow(i.step, i.path.name, i.mtime, i.size, i.best, i.valid is False, i.error)
        for i in list_checkpoints(rundir, records=records)
    ]
    snap.last_checkpoint = snap.checkpoints[-1] if snap.checkpoints else None
    try:
        snap.checkpoints_bytes = sum(f.stat().st_size for f in rundir.checkpoints.iterdir() if f.is_file())
    except OSError:
        snap.checkpoints_bytes = 0
    snap.disk_free = shutil.disk_usage(rundir.root).free
    margin = _disk_margin_mb(config)
    last = snap.last_checkpoint
    # An empty file says nothing about the size of the next save.
    if last is not None and last.bytes > 0 and margin is not None:
        snap.checkpoints_fit = checkpoints_that_fit(snap.disk_free, last.bytes, margin)


# -- health and warnings ---------------------------------------------------------------------
def _fill_health(snap: RunSnapshot, traj: Trajectory) -> None:
    last = traj.train[-1] if traj.train else None
    if last is not None:
        snap.gpu = {k: v for k, v in last.items() if k.startswith(("gpu", "cuda"))} or None
    snap.counts = {name: len(traj.events.get(name, [])) for name in Event.WARNINGS}
    logged = number(last.get("nonfinite_skipped")) if last else None
    # The trainer's own counter survives a trimmed log; the events survive a missing counter.
    snap.nonfinite_skipped = max(int(logged) if logged is not None and math.isfinite(logged) else 0,
                                 snap.counts[Event.NONFINITE_SKIP])
