"""The one checkpoint listing behind `status`, `monitor`, `checkpoints` and pre-flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from voxtrain.artifacts.checkpoints import CheckpointManager, list_checkpoints
from voxtrain.artifacts.layout import RunDir
from voxtrain.config import CheckpointConfig, load_config
from voxtrain.ops.preflight import _resume_check


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((4,), float(step))}, "optimizer": {}, "step": step, "epoch": 0,
            "batch_in_epoch": step, "rng": {}, "config": {}, "symbols": {}}


def _make_run(tmp_path) -> RunDir:
    """Checkpoints at steps 2, 4, 6 and 8; validation made step 2 the best; step 6 is corrupt;
    a save at step 10 was killed mid-write and left its temporary file."""
    run = RunDir(tmp_path / "run")
    run.create()
    manager = CheckpointManager(run, CheckpointConfig(keep_last=10, disk_margin_mb=0), log=lambda m: None)
    for step in (2, 4, 6, 8):
        manager.save(_state(step), step)
    data = run.checkpoint(6).read_bytes()
    run.checkpoint(6).write_bytes(data[: len(data) // 2])
    (run.checkpoints / f".{run.checkpoint(10).name}.tmp12345").write_bytes(data)
    records = [{"type": "val", "time": time.time(), "step": s, "loss_mel": v}
               for s, v in ((2, 0.5), (4, 0.7), (6, 0.5), (8, 0.6))]  # a tie: the first minimum wins
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_listing_with_verification(tmp_path) -> None:
    run = _make_run(tmp_path)
    infos = list_checkpoints(run, verify=True)
    assert [i.step for i in infos] == [2, 4, 6, 8]  # the temporary file is not a checkpoint
    assert [i.valid for i in infos] == [True, True, False, True]
    assert "ckpt-step00000006.pt" in infos[2].error and "truncated" in infos[2].error
    assert [i.step for i in infos if i.best] == [2]
    assert all(i.size == (run.checkpoint(i.step)).stat().st_size for i in infos)


def test_listing_without_verification_trusts_only_the_trainers_reports(tmp_path) -> None:
    run = _make_run(tmp_path)
    assert [i.valid for i in list_checkpoints(run)] == [None] * 4
    # A corruption the trainer reported (after the file was written) marks the file...
    report = {"type": "event", "event": "checkpoint_corrupt", "time": time.time() + 1, "step": 6,
              "error": "unreadable"}
    with open(run.metrics, "a") as f:
        f.write(json.dumps(report) + "\n")
    assert [i.valid for i in list_checkpoints(run)] == [None, None, False, None]
    # ...but not a later file saved again at that step.
    os.utime(run.checkpoint(6), (time.time() + 60, time.time() + 60))
    assert [i.valid for i in list_checkpoints(run)] == [None] * 4


def test_resume_plan_and_checkpoints_command_show_the_same_listing(tmp_path) -> None:
    run = _make_run(tmp_path)
    check = _resume_check(load_config(None), run)
    assert check.status == "warn" and "resume from step 8" in check.detail and "ckpt-step00000006.pt" in check.detail
    r = subprocess.run([sys.executable, "-m", "voxtrain.cli", "checkpoints", str(run.root)],
                       capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") > 3}
    assert set(rows) == {"2", "4", "6", "8"}
    assert "best" in rows["2"] and not any("best" in rows[s] for s in ("4", "6", "8"))
    assert "NO" in rows["6"] and "yes" in rows["8"]
