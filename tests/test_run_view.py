"""One reading of a run behind `voxtrain status` and the report page: both state the same speed
and the same forecast of every target, targets_hold included."""

from __future__ import annotations

import json

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.run_view import read_run
from voxtrain.config import config_from_dict
from voxtrain.ops.snapshot import run_snapshot
from voxtrain.report.data import gather

T0 = 1_700_000_000.0
# val_mel meets 0.5 on the last two validations only: "met" with targets_hold 1 or 2, not with 3.
VAL_MEL = [1.2, 0.9, 0.75, 0.66, 0.6, 0.56, 0.53, 0.51, 0.49, 0.48]
WER = [0.9, 0.6, 0.45, 0.37, 0.32, 0.29, 0.27, 0.26, 0.25, 0.245]


def _run(tmp_path, hold: int) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.create()
    config = config_from_dict({"training": {"max_steps": 3000, "validate_every": 100, "targets_hold": hold,
                                            "targets": {"val_mel": 0.5, "wer": {"value": 0.2}}}})
    run.config.write_text(config.to_yaml())
    records = [{"type": "event", "event": "start", "step": 0, "time": T0, "target_step": 3000, "max_steps": 3000}]
    for i, (mel, wer) in enumerate(zip(VAL_MEL, WER)):
        step = 100 * (i + 1)
        # 4 steps/s by the wall clock, while the trainer logs its compute-only 9 steps/s.
        records.append({"type": "train", "step": step, "time": T0 + step / 4, "loss_total": 2.0, "steps_per_s": 9.0})
        records.append({"type": "val", "step": step, "time": T0 + step / 4 + 1, "loss_mel": mel, "loss_total": 2.0})
        records.append({"type": "eval", "step": step, "time": T0 + step / 4 + 2, "wer": wer, "seconds": 3.0,
                        "sentences": 8, "texts": ["a"], "errors": None, "refused": None})
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_the_report_forecasts_what_status_forecasts(tmp_path):
    run = _run(tmp_path, hold=3)
    status, report = run_snapshot(run.root), gather(run)
    assert status.steps_per_s == report.steps_per_s == 4.0
    assert [t["metric"] for t in status.targets] == [t.metric for t in report.targets] == ["val_mel", "wer"]
    for shown, drawn in zip(status.targets, report.targets):
        assert shown["forecast"] == drawn.forecast.to_json() and shown["text"] == drawn.text
    # Two validations in a row under the threshold are not the three targets_hold asks for.
    val_mel = report.targets[0].forecast
    assert val_mel.status != "met" and status.targets[0]["forecast"]["status"] != "met"
    assert "on track" in report.targets[0].text


def test_targets_hold_is_what_met_means(tmp_path):
    view = read_run(_run(tmp_path, hold=2))
    assert view.targets[0].forecast.status == "met" and view.targets[1].forecast.status != "met"


def test_a_config_that_does_not_validate_is_a_note_not_an_error(tmp_path):
    run = _run(tmp_path, hold=3)
    run.config.write_text("training:\n  targets_hold: 0\n")
    view = read_run(run)
    assert view.config is None and "targets_hold" in view.config_error and view.targets == []
    assert view.steps_per_s == 4.0
    assert run_snapshot(run.root).targets == []
    assert any("could not be loaded" in n for n in gather(run).notes)
