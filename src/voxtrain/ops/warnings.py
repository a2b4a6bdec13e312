"""What a run's snapshot warns about: its state, its events, overfitting and resources."""

from __future__ import annotations

from voxtrain.artifacts.metrics_format import Event, Trajectory, number
from voxtrain.artifacts.run_view import RATE_WINDOW_RECORDS
from voxtrain.ops.facts import RunSnapshot
from voxtrain.ops.trends import VAL_TREND_RECORDS, finite, train_avg, trend, val_points

# A trainer silent for longer than this, and than 10 of its own gaps, may be hung.
STALL_MIN_S = 900.0


def run_warnings(s: RunSnapshot, traj: Trajectory) -> list[str]:
    return [*_state_warnings(s), *_event_warnings(s, traj), *_overfit_warning(s, traj), *_resource_warnings(s, traj)]


def _state_warnings(s: RunSnapshot) -> list[str]:
    out = []
    if s.state == "dead":
        out.append(f"the trainer is not running and recorded no stop: it crashed or was killed after "
                   f"step {s.step}" + (f" (see {s.log_file})" if s.log_file else "")
                   + f". Resume with `voxtrain train --run {s.run} ...` (it restarts from the last checkpoint).")
    if s.state == "stopped" and s.exit_code not in (0, None):
        out.append(f"the trainer stopped with exit code {s.exit_code}: {s.stop_reason}")
    return out


def _event_warnings(s: RunSnapshot, traj: Trajectory) -> list[str]:
    out, events = [], traj.events
    skipped = events.get(Event.CHECKPOINT_SKIPPED, [])
    if skipped:
        last = skipped[-1]
        later = any(e.get("step", -1) > last.get("step", -1) for e in events.get(Event.CHECKPOINT_SAVED, []))
        advice = ("; later saves succeeded" if later
                  else "; none saved since: free disk space or lower checkpoint.keep_last")
        out.append(f"{len(skipped)} checkpoint save(s) SKIPPED, last at step {last.get('step')}: "
                   f"{last.get('reason', '?')}{advice}")
    if s.nonfinite_skipped:
        nf = events.get(Event.NONFINITE_SKIP, [])
        where = f", last at step {nf[-1].get('step')}" if nf else ""
        out.append(f"{s.nonfinite_skipped} training step(s) skipped for a non-finite loss/gradient{where}")
    for row in s.checkpoints:
        if row.corrupt:
            out.append(f"checkpoint {row.file} is corrupt (kept on disk for inspection; resume skips it)")
    exports = events.get(Event.EXPORT_SKIPPED)
    if exports:
        out.append(f"best-model export skipped {len(exports)} time(s): {exports[-1].get('reason', '?')}")
    for failed in events.get(Event.TRACKER_FAILED, []):
        out.append(f"experiment tracker {failed.get('tracker', '?')} failed ({failed.get('during', '?')}): "
                   f"{failed.get('error', '?')}; the run goes on without it")
    failed_scores = events.get(Event.LISTENING_FAILED)
    if failed_scores:
        last = failed_scores[-1]
        out.append(f"listening scorer {last.get('scorer', '?')} failed {len(failed_scores)} time(s), last at step "
                   f"{last.get('step')}: {last.get('error', '?')}; training goes on, best falls back to val_mel")
    retries = events.get(Event.OUT_OF_MEMORY_RETRY)
    if retries:
        out.append(f"{len(retries)} step(s) ran out of memory and were redone in smaller micro-batches, last at "
                   f"step {retries[-1].get('step')}: lower training.batch_size or set training.batch_frames")
    return out


def _overfit_warning(s: RunSnapshot, traj: Trajectory) -> list[str]:
    recent = val_points(traj)[-VAL_TREND_RECORDS:]
    if len(recent) < 3 or trend(recent) != "rising" or not recent[-1][1] > recent[0][1]:
        return []
    a, b = train_avg(traj.train, int(recent[0][0])), train_avg(traj.train, int(recent[-1][0]))
    if a is None or b is None or not b < a:
        return []
    return [f"validation loss rising ({recent[0][1]:.4g} -> {recent[-1][1]:.4g}, steps "
            f"{int(recent[0][0])}-{int(recent[-1][0])}) while training loss falls ({a:.4g} -> "
            f"{b:.4g}): overfitting? the best model (step {s.best_step}) is kept"]


def _resource_warnings(s: RunSnapshot, traj: Trajectory) -> list[str]:
    out = []
    if s.checkpoints_fit == 0:
        out.append("low disk: the next checkpoint does not fit beside the margin unless rotation frees space")
    age = s.last_record_age_s
    if s.state == "running" and age is not None:
        times = finite([number(r.get("time")) for r in traj.train[-RATE_WINDOW_RECORDS:]])
        gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        if age > max(STALL_MIN_S, 10 * gap):
            out.append(f"no new metrics for {age / 60:.0f} min: the trainer may be hung (check its log)")
    if s.metrics_bad_lines:
        out.append(f"{s.metrics_bad_lines} unreadable line(s) in metrics.jsonl were ignored")
    return out
