"""Everything a person wants to know about a run, computed from its files alone.

The run is read by `artifacts.run_view.read_run`, the reader behind the report page too, so
speed and forecasts are the report's. Import-light on purpose (no torch, numpy or rich; numpy
only to forecast a target): `voxtrain status` must answer at once and the monitor re-reads a
run every few seconds while a trainer saturates the machine. Checkpoints are therefore listed
by name, size and mtime, never loaded; "best" comes from the validation records by the
checkpoint manager's own rule (`artifacts.checkpoints`).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import Any

from voxtrain.artifacts.best import best_by_of, best_from_records
from voxtrain.artifacts.checkpoints import list_checkpoints
from voxtrain.artifacts.disk import checkpoints_that_fit
from voxtrain.artifacts.lock import running_trainer
from voxtrain.artifacts.metrics_format import Event, MetricsTail, Trajectory, eval_scores, number, step_of
from voxtrain.artifacts.run_view import RunView, read_run
from voxtrain.ops.facts import CheckpointRow, ProcessFacts, RunSnapshot
from voxtrain.ops.trends import VAL_TREND_RECORDS, train_avg, trend, val_points
from voxtrain.ops.warnings import run_warnings

SPARK_POINTS = 120


def run_snapshot(run: Path | str, tail: MetricsTail | None = None, now: float | None = None) -> RunSnapshot:
    """Facts about a run directory. Raises FileNotFoundError when `run` is not a directory.

    Pass the same `tail` on every refresh to read the metrics file incrementally.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory at {run}" + (" (it is a file)" if run.exists() else ""))
    view = read_run(run, tail)
    traj = view.traj
    log_file = view.run.latest_log_file()
    snap = RunSnapshot(
        run=str(run.resolve()), name=view.run.name, now=time.time() if now is None else now,
        log_file=str(log_file) if log_file else None, metrics_records=len(view.records),
        metrics_bad_lines=view.bad_lines, metrics_torn_tail=view.torn_tail,
    )
    _fill_state(snap, view)
    _fill_losses(snap, traj)
    _fill_validation(snap, view)
    _fill_timing(snap, view)
    _fill_checkpoints(snap, view)
    _fill_scores(snap, view)
    _fill_health(snap, traj)
    snap.warnings = run_warnings(snap, traj)
    if view.config_error:  # the trainer would refuse to resume such a run as well
        snap.warnings.append(f"{view.run.config.name} could not be loaded, so targets and the disk margin are not "
                             f"known: {view.config_error}")
    return snap


# -- state ---------------------------------------------------------------------------------
def _fill_state(snap: RunSnapshot, view: RunView) -> None:
    traj = view.traj
    last_train = traj.train[-1] if traj.train else None
    start = traj.starts[-1] if traj.starts else None

    def latest(key: str) -> Any:
        # A stage's goals travel in every train record; before the first one, the start event has them.
        for source in (last_train, start):
            if source and source.get(key) is not None:
                return source[key]
        return None

    snap.step = view.step or 0
    snap.target_step = latest("target_step")
    snap.max_steps = latest("max_steps") or (view.config.training.max_steps if view.config else None)
    snap.epoch = last_train.get("epoch") if last_train else None
    stop = traj.stop
    snap.stop_reason = stop.get("reason") if stop else None
    snap.stop_cause = stop.get("cause") if stop else None
    snap.exit_code = stop.get("exit_code") if stop else None
    proc = running_trainer(view.run)
    if proc is not None:
        snap.state, snap.pid, snap.host, snap.process = "running", proc.pid, proc.host, _process_facts(proc.pid)
    elif not view.records:
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


def _fill_validation(snap: RunSnapshot, view: RunView) -> None:
    traj = view.traj
    points = val_points(traj)
    snap.val_loss = points[-1][1] if points else None
    snap.val_trend = trend(points[-VAL_TREND_RECORDS:])
    snap.val_count = len(traj.val)
    if traj.val:
        snap.val_loss_mel, snap.val_step = number(traj.val[-1].get("loss_mel")), traj.val[-1]["step"]
    best = best_from_records(view.records, *best_by_of(view.config))
    snap.best_by, snap.best_value = best.metric, best.value
    if best.step is not None:
        snap.best_step, snap.best_val_mel = best.step, best.val_mel
    elif exported := traj.events.get(Event.BEST_EXPORTED):
        # Validation records without loss_mel (older runs): the trainer's own export says which.
        snap.best_step, snap.best_val_mel = step_of(exported[-1]), number(exported[-1].get("val_mel_loss"))


# -- speed and time --------------------------------------------------------------------------
def _fill_timing(snap: RunSnapshot, view: RunView) -> None:
    records, traj, rate = view.records, view.traj, view.steps_per_s
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
def _fill_checkpoints(snap: RunSnapshot, view: RunView) -> None:
    rundir = view.run
    snap.checkpoints = [
        CheckpointRow(i.step, i.path.name, i.mtime, i.size, i.best, i.valid is False, i.error)
        for i in list_checkpoints(rundir, records=view.records)
    ]
    snap.last_checkpoint = snap.checkpoints[-1] if snap.checkpoints else None
    try:
        snap.checkpoints_bytes = sum(f.stat().st_size for f in rundir.checkpoints.iterdir() if f.is_file())
    except OSError:
        snap.checkpoints_bytes = 0
    snap.disk_free = shutil.disk_usage(rundir.root).free
    margin = view.config.checkpoint.disk_margin_mb if view.config else None
    last = snap.last_checkpoint
    # An empty file says nothing about the size of the next save.
    if last is not None and last.bytes > 0 and margin is not None and math.isfinite(margin):
        snap.checkpoints_fit = checkpoints_that_fit(snap.disk_free, last.bytes, margin)


# -- listening scores and targets ------------------------------------------------------------
def _fill_scores(snap: RunSnapshot, view: RunView) -> None:
    if view.traj.evals:
        newest = view.traj.evals[-1]
        snap.scores_step, snap.scores = newest["step"], eval_scores(newest)
        snap.scores_seconds = number(newest.get("seconds"))
    snap.targets = [t.to_json() for t in view.targets]


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
