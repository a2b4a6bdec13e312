"""Everything a person wants to know about a run, computed from its files alone.

Import-light on purpose (no torch, rich or pydantic): `voxtrain status` must answer at once
and the monitor re-reads a run every few seconds while a trainer saturates the machine.
Checkpoints are therefore listed by name, size and mtime, never loaded; "best" comes from
the validation records, which is how the checkpoint manager chooses it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import running_trainer

AVG_WINDOW_STEPS = 100
SPARK_POINTS = 120
VAL_TREND_RECORDS = 5
RATE_WINDOW_RECORDS = 20
DEFAULT_DISK_MARGIN_MB = 256.0  # CheckpointConfig's default, for a run without config.yaml
STALL_MIN_S = 900.0
WARN_EVENTS = ("checkpoint_skipped", "checkpoint_corrupt", "nonfinite_skip", "export_skipped")


class MetricsTail:
    """Incremental reader of metrics.jsonl: each refresh parses only the lines appended since
    the last one, so a long run's monitor does not re-parse megabytes every few seconds.

    A line is consumed only once its newline is written; a torn last line (writer killed
    mid-line) is never parsed, like read_metrics, and is reported through `torn_tail`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self.inode, self.offset, self.records, self.bad_lines, self.torn_tail = inode, 0, [], 0, False

    def read(self) -> list[dict]:
        try:
            st = os.stat(self.path)
        except OSError:
            self._reset(None)
            return self.records
        if st.st_ino != self.inode or st.st_size < self.offset:  # replaced or truncated
            self._reset(st.st_ino)
        if st.st_size > self.offset:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(st.st_size - self.offset)
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    self.bad_lines += 1
                    continue
                if isinstance(record, dict):
                    self.records.append(record)
            self.offset += end
        self.torn_tail = st.st_size > self.offset
        return self.records


def _num(value: Any) -> float | None:
    # The writer stores NaN/Inf as strings ("nan"); keep them as floats so they show up.
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope; robust to one noisy point where first-vs-last is not."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def _trend(points: list[tuple[float, float]]) -> str | None:
    if len(points) < 2:
        return None
    slope = _slope(points)
    span = points[-1][0] - points[0][0]
    scale = abs(sum(y for _, y in points) / len(points)) or 1.0
    if abs(slope * span) < 1e-3 * scale:  # a change this small is noise, not a trend
        return "flat"
    return "rising" if slope > 0 else "falling"


def _train_avg(train: list[dict], at_step: int) -> float | None:
    values = _finite([_num(r.get("loss_total")) for r in train if at_step - AVG_WINDOW_STEPS < r["step"] <= at_step])
    return sum(values) / len(values) if values else None


def _load_config(run: RunDir) -> dict:
    try:
        import yaml

        data = yaml.safe_load(run.config.read_text())
        return data if isinstance(data, dict) else {}
    except Exception:  # a missing or broken config only costs the disk-margin estimate
        return {}


_PROCESSES: dict[int, Any] = {}  # psutil.Process per pid: cpu_percent needs the previous sample


def _process_facts(pid: int) -> dict | None:
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
            try:
                child_rss += child.memory_info().rss
            except psutil.Error:
                pass
        return {"cpu_percent": cpu, "rss": rss, "threads": threads, "children": len(children),
                "children_rss": child_rss}
    except psutil.Error:
        _PROCESSES.pop(pid, None)
        return None


def _parse(records: list[dict]) -> dict:
    """One pass over the records: sessions, and the train/val trajectory after resumes."""
    train: list[dict] = []
    val: list[dict] = []
    starts: list[dict] = []
    session_train: list[dict] = []
    stop: dict | None = None
    last_step_record: dict | None = None
    events: dict[str, list[dict]] = {}
    for r in records:
        kind, step = r.get("type"), r.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            step = None
        if kind == "event":
            name = str(r.get("event"))
            events.setdefault(name, []).append(r)
            if name == "start":
                starts.append(r)
                stop, session_train = None, []
                if step is not None:
                    # A resume restarts from a checkpoint: records past it describe steps that were redone.
                    train = [x for x in train if x["step"] <= step]
                    val = [x for x in val if x["step"] <= step]
            elif name == "stop":
                stop = r
            if step is not None and name in ("start", "stop", "checkpoint_saved"):
                last_step_record = r
        elif kind == "train" and step is not None:
            while train and train[-1]["step"] >= step:  # a rewind without a start event
                train.pop()
            train.append(r)
            session_train.append(r)
            last_step_record = r
        elif kind == "val" and step is not None:
            while val and val[-1]["step"] >= step:
                val.pop()
            val.append(r)
    return {"train": train, "val": val, "starts": starts, "session_train": session_train, "stop": stop,
            "last_step_record": last_step_record, "events": events}


def _speed(session_train: list[dict], last_train: dict | None) -> float | None:
    """Wall-clock steps/s over the session's recent records: it includes validation and saving
    time, which the trainer's own steps_per_s (compute time only) leaves out, so ETAs hold."""
    recent = session_train[-RATE_WINDOW_RECORDS:]
    if len(recent) >= 2:
        t0, t1 = _num(recent[0].get("time")), _num(recent[-1].get("time"))
        if t0 is not None and t1 is not None and t1 > t0:
            return (recent[-1]["step"] - recent[0]["step"]) / (t1 - t0)
    return _num(last_train.get("steps_per_s")) if last_train else None


def _checkpoints(run: RunDir, best_step: int | None, corrupt: list[dict]) -> list[dict]:
    rows = []
    for step, path in run.checkpoint_files():
        try:
            st = path.stat()
        except OSError:  # rotated away between listing and stat
            continue
        # A corrupt report counts only for the file it saw, not for a later re-save at that step.
        bad = any(e.get("step") == step and (_num(e.get("time")) or 0) + 1 >= st.st_mtime for e in corrupt)
        rows.append({"step": step, "file": path.name, "time": st.st_mtime, "bytes": st.st_size,
                     "best": step == best_step, "corrupt": bad})
    return rows


def run_snapshot(run: Path, tail: MetricsTail | None = None, now: float | None = None) -> dict:
    """Facts about a run directory. Raises FileNotFoundError when `run` is not a directory.

    Pass the same `tail` on every refresh to read the metrics file incrementally.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory at {run}" + (" (it is a file)" if run.exists() else ""))
    rundir = RunDir(run)
    now = time.time() if now is None else now
    if tail is None or tail.path != rundir.metrics:
        tail = MetricsTail(rundir.metrics)
    records = tail.read()
    p = _parse(records)
    train, val, starts, stop, events = p["train"], p["val"], p["starts"], p["stop"], p["events"]
    last_train = train[-1] if train else None
    start = starts[-1] if starts else None
    cfg = _load_config(rundir)
    cfg_training = cfg.get("training") if isinstance(cfg.get("training"), dict) else {}
    cfg_ckpt = cfg.get("checkpoint") if isinstance(cfg.get("checkpoint"), dict) else {}

    def latest(key: str) -> Any:
        for source in (last_train, start):
            if source and source.get(key) is not None:
                return source[key]
        return None

    step = int(p["last_step_record"]["step"]) if p["last_step_record"] else 0
    target = latest("target_step")
    max_steps = latest("max_steps") or cfg_training.get("max_steps")

    proc = running_trainer(rundir)
    exit_code = stop.get("exit_code") if stop else None
    if proc is not None:
        state = "running"
    elif not records:
        state = "not started"
    elif stop is not None:
        state = "finished" if exit_code == 0 and target is not None and step >= target else "stopped"
    else:
        state = "dead"

    # Loss facts come from the trajectory, so redone steps after a resume are not counted twice.
    loss_recent = [_num(r.get("loss_total")) for r in train[-SPARK_POINTS:]]
    avg = _train_avg(train, step if last_train is None else last_train["step"])
    val_points = [(float(r["step"]), v) for r in val if (v := _num(r.get("loss_total"))) is not None
                  and math.isfinite(v)]
    trend_points = val_points[-VAL_TREND_RECORDS:]
    mel = [(r["step"], v) for r in val if (v := _num(r.get("loss_mel"))) is not None and math.isfinite(v)]
    best_step: int | None
    best_val_mel: float | None
    if mel:
        best_step, best_val_mel = min(mel, key=lambda sv: sv[1])  # first minimum, like update_best
    else:
        exported = events.get("best_exported", [])
        best_step = exported[-1].get("step") if exported else None
        best_val_mel = _num(exported[-1].get("val_mel_loss")) if exported else None

    rate = _speed(p["session_train"], last_train)
    last_time = _num(records[-1].get("time")) if records else None
    end = now if state == "running" else (last_time or now)
    first_time = _num((starts[0] if starts else records[0]).get("time")) if records else None
    session_time = _num(start.get("time")) if start else first_time

    def eta(goal: Any) -> float | None:
        if not isinstance(goal, int) or rate is None or rate <= 0 or not math.isfinite(rate):
            return None
        return max(goal - step, 0) / rate

    corrupt = events.get("checkpoint_corrupt", [])
    ckpts = _checkpoints(rundir, best_step, corrupt)
    try:
        ckpt_bytes = sum(f.stat().st_size for f in rundir.checkpoints.iterdir() if f.is_file())
    except OSError:
        ckpt_bytes = 0
    disk_free = shutil.disk_usage(run).free
    margin = float(cfg_ckpt.get("disk_margin_mb", DEFAULT_DISK_MARGIN_MB)) * 2**20
    fits = int(max(disk_free - margin, 0) // ckpts[-1]["bytes"]) if ckpts and ckpts[-1]["bytes"] else None
    log_file = rundir.latest_log_file()

    snap: dict[str, Any] = {
        "run": str(run.resolve()), "name": rundir.name, "now": now, "state": state,
        "pid": proc.pid if proc else None, "host": proc.host if proc else None,
        "stop_reason": stop.get("reason") if stop else None, "exit_code": exit_code,
        "step": step, "target_step": target, "max_steps": max_steps,
        "epoch": last_train.get("epoch") if last_train else None,
        "loss": _num(last_train.get("loss_total")) if last_train else None,
        "loss_mel": _num(last_train.get("loss_mel")) if last_train else None,
        "loss_avg100": avg, "loss_recent": loss_recent,
        "lr": _num(last_train.get("lr")) if last_train else None,
        "grad_norm": _num(last_train.get("grad_norm")) if last_train else None,
        "val_loss": val_points[-1][1] if val_points else None,
        "val_loss_mel": _num(val[-1].get("loss_mel")) if val else None,
        "val_step": val[-1]["step"] if val else None, "val_count": len(val),
        "val_trend": _trend(trend_points), "best_step": best_step, "best_val_mel": best_val_mel,
        "steps_per_s": rate,
        "frames_per_s": _num(last_train.get("frames_per_s")) if last_train else None,
        "eta_target_s": eta(target), "eta_max_s": eta(max_steps),
        "started": first_time, "session_started": session_time, "sessions": len(starts),
        "elapsed_s": end - first_time if first_time is not None else None,
        "session_elapsed_s": end - session_time if session_time is not None else None,
        "last_record_time": last_time, "last_record_age_s": now - last_time if last_time else None,
        "checkpoints": ckpts, "checkpoints_bytes": ckpt_bytes,
        "last_checkpoint": ckpts[-1] if ckpts else None,
        "disk_free": disk_free, "checkpoints_fit": fits,
        "process": _process_facts(proc.pid) if proc else None,
        "gpu": ({k: v for k, v in last_train.items() if k.startswith(("gpu", "cuda"))} or None)
        if last_train else None,
        "counts": {name: len(events.get(name, [])) for name in WARN_EVENTS},
        "nonfinite_skipped": max(int(_num(last_train.get("nonfinite_skipped")) or 0) if last_train else 0,
                                 len(events.get("nonfinite_skip", []))),
        "log_file": str(log_file) if log_file else None,
        "metrics_records": len(records), "metrics_bad_lines": tail.bad_lines, "metrics_torn_tail": tail.torn_tail,
    }
    snap["warnings"] = _warnings(snap, train, val_points, events)
    return snap


def _warnings(s: dict, train: list[dict], val_points: list[tuple[float, float]],
              events: dict[str, list[dict]]) -> list[str]:
    out = []
    if s["state"] == "dead":
        out.append(f"the trainer is not running and recorded no stop: it crashed or was killed after "
                   f"step {s['step']}" + (f" (see {s['log_file']})" if s["log_file"] else "")
                   + f". Resume with `voxtrain train --run {s['run']} ...` (it restarts from the last checkpoint).")
    if s["state"] == "stopped" and s["exit_code"] not in (0, None):
        out.append(f"the trainer stopped with exit code {s['exit_code']}: {s['stop_reason']}")
    skipped = events.get("checkpoint_skipped", [])
    if skipped:
        last = skipped[-1]
        later = any(e.get("step", -1) > last.get("step", -1) for e in events.get("checkpoint_saved", []))
        advice = ("; later saves succeeded" if later
                  else "; none saved since: free disk space or lower checkpoint.keep_last")
        out.append(f"{len(skipped)} checkpoint save(s) SKIPPED, last at step {last.get('step')}: "
                   f"{last.get('reason', '?')}{advice}")
    if s["nonfinite_skipped"]:
        nf = events.get("nonfinite_skip", [])
        where = f", last at step {nf[-1].get('step')}" if nf else ""
        out.append(f"{s['nonfinite_skipped']} training step(s) skipped for a non-finite loss/gradient{where}")
    for row in s["checkpoints"]:
        if row["corrupt"]:
            out.append(f"checkpoint {row['file']} is corrupt (kept on disk for inspection; resume skips it)")
    if events.get("export_skipped"):
        out.append(f"best-model export skipped {len(events['export_skipped'])} time(s): "
                   f"{events['export_skipped'][-1].get('reason', '?')}")
    recent = val_points[-VAL_TREND_RECORDS:]
    if len(recent) >= 3 and _trend(recent) == "rising" and recent[-1][1] > recent[0][1]:
        a, b = _train_avg(train, int(recent[0][0])), _train_avg(train, int(recent[-1][0]))
        if a is not None and b is not None and b < a:
            out.append(f"validation loss rising ({recent[0][1]:.4g} -> {recent[-1][1]:.4g}, steps "
                       f"{int(recent[0][0])}-{int(recent[-1][0])}) while training loss falls ({a:.4g} -> "
                       f"{b:.4g}): overfitting? the best model (step {s['best_step']}) is kept")
    if s["checkpoints_fit"] == 0:
        out.append("low disk: the next checkpoint does not fit beside the margin unless rotation frees space")
    age = s["last_record_age_s"]
    if s["state"] == "running" and age is not None:
        times = _finite([_num(r.get("time")) for r in train[-RATE_WINDOW_RECORDS:]])
        gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        if age > max(STALL_MIN_S, 10 * gap):
            out.append(f"no new metrics for {age / 60:.0f} min: the trainer may be hung (check its log)")
    if s["metrics_bad_lines"]:
        out.append(f"{s['metrics_bad_lines']} unreadable line(s) in metrics.jsonl were ignored")
    return out


def jsonable(value: Any) -> Any:
    """The snapshot as strict JSON: NaN/Inf become strings, as in metrics.jsonl."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
