"""Runs that end themselves: targets that hold, early stop, and their counters across a resume.
Real micro training runs; the metric is the validation mel loss, so no scorer is needed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import torch

from voxtrain.artifacts.best import BestTracker, best_from_records
from voxtrain.artifacts.layout import RunDir


def _stop_event(t) -> dict:
    return [r for r in t.metrics() if r.get("event") == "stop"][-1]


def _state(run) -> dict:
    step, path = RunDir(run).checkpoint_files()[-1]
    return torch.load(path, map_location="cpu", weights_only=True)


def _val_steps(t) -> list[int]:
    return [r["step"] for r in t.metrics() if r["type"] == "val"]


def test_targets_end_the_run_after_holding_on_consecutive_evaluations(trainer_factory):
    # val_mel <= 1000 holds at every validation: the run ends at the second one, not the first.
    t = trainer_factory("targets", training={"max_steps": 400, "validate_every": 4, "save_every": 400,
                                             "targets": {"val_mel": 1000.0}, "targets_hold": 2})
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    stop = _stop_event(t)
    assert stop["step"] == 8 and stop["cause"] == "targets_reached", stop
    assert "target reached: val_mel" in stop["reason"] and "2 evaluations in a row" in stop["reason"]
    assert "target reached" in r.stderr
    assert _state(t.run)["step"] == 8  # saved where it stopped
    status = subprocess.run([sys.executable, "-m", "voxtrain.cli", "status", "--json", str(t.run)],
                            capture_output=True, text=True, timeout=60)
    snap = json.loads(status.stdout)
    assert snap["stop_cause"] == "targets_reached"
    assert [x["metric"] for x in snap["targets"]] == ["val_mel"]
    assert snap["targets"][0]["forecast"]["status"] == "met"


def test_unreachable_target_keeps_training_to_max_steps(trainer_factory):
    t = trainer_factory("unreached", training={"max_steps": 12, "validate_every": 4, "save_every": 400,
                                               "targets": {"val_mel": 0.0}, "targets_hold": 1})
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    assert _stop_event(t)["cause"] is None and _stop_event(t)["step"] == 12


def test_early_stop_and_its_counters_survive_sigterm_and_resume(trainer_factory):
    # min_delta larger than any change: no validation after the first counts as an improvement,
    # so the run stops at the first validation + patience validations: step 3 + 8 * 3 = 27.
    sections = {"training": {"max_steps": 400, "validate_every": 3, "save_every": 400,
                             "early_stop": {"metric": "val_mel", "patience": 8, "min_delta": 1000.0}}}
    straight = trainer_factory("straight", **sections)
    r = straight.run_to_end()
    assert r.returncode == 0, r.stderr
    stop = _stop_event(straight)
    assert stop["step"] == 27 and stop["cause"] == "early_stop", stop
    assert "early stop: val_mel has not improved" in stop["reason"]
    assert _state(straight.run)["step"] == 27

    stopped = trainer_factory("stopped", **sections)
    proc = stopped.start()
    stopped.wait_for_step(proc, 8)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    mid = _state(stopped.run)
    assert 8 <= mid["step"] < 27 and mid["stop_rules"]["early_stale"] == (mid["step"] // 3) - 1, mid["stop_rules"]
    r = stopped.run_to_end()
    assert r.returncode == 0, r.stderr
    # Without the restored counters the resumed run would count its patience afresh and stop later.
    assert _stop_event(stopped)["step"] == 27 and _stop_event(stopped)["reason"] == stop["reason"]
    assert _val_steps(stopped)[-1] == 27


def _val(step: int, mel: float) -> dict:
    return {"type": "val", "time": step, "step": step, "loss_mel": mel}


def _eval(step: int, **scores) -> dict:
    return {"type": "eval", "time": step, "step": step, **scores}


def test_best_by_a_score_falls_back_to_val_mel_where_the_score_is_missing():
    records = [_val(10, 0.9), _eval(10, wer=0.5), _val(20, 0.8), _eval(20, wer=0.3),
               _val(30, 0.5), _eval(30, wer=0.4),  # lower mel, worse wer: not best by wer
               _val(40, 0.7), _eval(40, errors={"asr": "boom"}),  # no wer: judged by mel, 0.7 < the best one's 0.8
               _val(50, 0.6)]  # validated but not scored: not a candidate
    best = best_from_records(records, "wer", "below")
    assert (best.step, best.value, best.val_mel) == (40, 0.3, 0.7)
    assert best_from_records(records, "val_mel", "below").step == 30
    assert best_from_records(records, "similarity", "above").step == 30  # never measured: mel decides
    # What the trainer does at each validation is the same rule, step by step.
    tracker = BestTracker("wer", "below")
    picks = [tracker.consider(s, m, sc) for s, m, sc in
             [(10, 0.9, {"wer": 0.5}), (20, 0.8, {"wer": 0.3}), (30, 0.5, {"wer": 0.4}), (40, 0.7, {})]]
    assert picks == [True, True, False, True] and tracker.step == 40
    restored = BestTracker.from_state(tracker.state(), "wer", "below")
    assert restored.consider(60, 0.1, {"wer": 0.31}) is False  # the bar (0.3) survived the checkpoint
