"""`voxtrain train-vocoder` on the run harness, as real processes on the micro corpus: what
`train` has, it has (detach, status, stop, faults, disk guard, several processes). Its critics,
its starting generator and its joint mode: test_vocoder_critics.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import (
    OutputLines,
    Trainer,
    _env,
    assert_same,
    events,
    records,
    run_cmd,
    vocoder_cmd,
    wait_until,
)


# -- the vocoder task under the run harness: what `train` has, train-vocoder has ------------
def voxtrain(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cmd([sys.executable, "-m", "voxtrain.cli", *args], timeout=timeout)


def test_detach_status_monitor_and_stop(acoustic, features, corpus_dir, vocoder_config, tmp_path) -> None:
    from voxtrain.artifacts.checkpoint_format import TrainingState
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.lock import pid_alive

    run = tmp_path / "detached"
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run, vocoder_config,
                      "--set", "vocoder_training.max_steps=100000", "--detach")
    launched = run_cmd(cmd)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    pid = int(launched.stdout.split("training in the background: pid ")[1].split()[0])
    try:
        assert f"voxtrain stop {run}" in launched.stdout
        wait_until(lambda: max(records(run, "train"), default=0) >= 2, 240, "step 2")
        status = voxtrain("status", str(run))
        assert status.returncode == 0 and f"running (pid {pid}" in status.stdout, status.stdout + status.stderr
        snap = json.loads(voxtrain("monitor", "--once", "--json", str(run)).stdout)
        assert snap["step"] >= 2 and snap["target_step"] == 100000, snap
        stop = voxtrain("stop", str(run), timeout=300)
        assert stop.returncode == 0 and "stopped after saving a checkpoint" in stop.stdout, stop.stdout + stop.stderr
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    step = events(run, "stop")[-1]["step"]
    state = TrainingState.from_dict(torch.load(RunDir(run).checkpoint(step), weights_only=True))
    assert (state.mode, state.step) == ("vocoder", step) and step >= 2


def test_a_sigkill_mid_save_leaves_a_resumable_run(reference, acoustic, features, corpus_dir, vocoder_config,
                                                   tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir

    run = RunDir(tmp_path / "killed")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config,
                      "--set", "vocoder_training.save_every=2")
    proc = subprocess.Popen(cmd, env=dict(_env(), VOXTRAIN_TEST_SLOW_WRITE_S="0.2"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    output = OutputLines(proc.stdout)
    # 0.2 s per 4 MB chunk: about 8 s for a 170 MB vocoder checkpoint.
    try:  # the save of step 2 completes; the one of step 4 is killed while it writes
        tmp = wait_until(lambda: sorted(run.checkpoints.glob(".ckpt-step00000004.pt.tmp*")), 240, "the step-4 save",
                         proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    output.join(timeout=10)
    assert [s for s, _ in run.checkpoint_files()] == [2] and tmp[0].exists()

    resumed = run_cmd(cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert f"RESUMING the vocoder fine-tune from {run.checkpoint(2)} (step 2)" in resumed.stderr
    assert f"removed {tmp[0].name} left by an interrupted save" in resumed.stderr and not tmp[0].exists()
    got = torch.load(run.checkpoint(6), weights_only=True)
    want = torch.load(RunDir(reference).checkpoint_files()[-1][1], weights_only=True)
    for key in ("model", "optimizers", "rng", "epoch", "batch_in_epoch"):
        assert_same(want[key], got[key], key)


def test_a_nonfinite_step_is_skipped(acoustic, features, corpus_dir, vocoder_config, tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.vocoder_training.pairs import PairSet

    run = RunDir(tmp_path / "poisoned")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config)
    assert run_cmd([*cmd, "--until-step", "1"]).returncode == 0
    # One training clip's teacher-forced mel becomes +inf: every segment of it gives a NaN loss.
    pairs = PairSet(run)
    clip = pairs.clips[pairs.split("train")[0]]
    mels = np.load(run.vocoder_mels, mmap_mode="r+")
    mels[clip["frame_offset"] : clip["frame_offset"] + clip["n_frames"]] = np.inf
    mels.flush()
    del mels
    result = run_cmd(cmd)
    assert result.returncode == 0, result.stderr
    skips = events(run.root, "nonfinite_skip")
    assert skips and all(e["consecutive"] == 1 for e in skips), skips
    assert "step skipped (1 in a row)" in result.stderr
    train = records(run.root, "train")
    assert sorted(train) == list(range(1, 7)) and all(np.isfinite(r["loss_total"]) for r in train.values())
    state = torch.load(run.checkpoint(6), weights_only=True)
    assert state["nonfinite_skipped"] == len(skips)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_a_filling_disk_keeps_the_newest_valid_checkpoint(acoustic, features, corpus_dir, vocoder_config,
                                                          tmp_path) -> None:
    from conftest import Hog, _mount_tmpfs, wait_event
    from voxtrain.artifacts.checkpoint_format import verify_checkpoint
    from voxtrain.artifacts.layout import RunDir

    fs = tmp_path / "fs"
    if not _mount_tmpfs(fs, 700 * 1024):  # room for three 170 MB checkpoints, the export and the pairs
        pytest.skip("cannot mount a tmpfs here (needs root); the disk-full test needs a real small filesystem")
    try:
        run = RunDir(fs / "run")
        trainer = Trainer(features, run.root, vocoder_config)  # only for its metrics reader
        cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config,
                          "--set", "vocoder_training.max_steps=100000", "--set", "vocoder_training.save_every=1",
                          "--set", "checkpoint.keep_last=2")
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            wait_event(trainer, proc, lambda e: e["event"] == "checkpoint_pruned", timeout=300)
            size = run.checkpoint_files()[-1][1].stat().st_size
            hog = Hog(fs, leave=size // 2)
            hog.start()
            skip = wait_event(trainer, proc, lambda e: e["event"] == "checkpoint_skipped", timeout=300)
            wait_until(lambda: max(records(run.root, "train"), default=0) >= skip["step"] + 2, 240, "two more steps",
                       proc)
            hog.stop.set()
            hog.join()
            kept = run.checkpoint_files()
            assert len(kept) >= 1 and kept[-1][0] < skip["step"] and not verify_checkpoint(kept[-1][1])
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out
        assert f"checkpoint at step {skip['step']} SKIPPED" in out
        assert run.checkpoint_files() and not verify_checkpoint(run.checkpoint_files()[-1][1])
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def test_two_processes_share_each_global_batch() -> None:
    from voxtrain.vocoder_training.task import SegmentOrder

    clips, lengths = list(range(10, 22)), [40 + 3 * i for i in range(12)]
    whole = SegmentOrder(clips, lengths, batch_size=4, frames=8, seed=7)
    ranks = [SegmentOrder(clips, lengths, batch_size=2, frames=8, seed=7, rank=r, world_size=2) for r in (0, 1)]
    assert whole.per_epoch == ranks[0].per_epoch == 3
    for epoch, index in ((0, 0), (0, 2), (3, 1)):
        shares = [o.batch(epoch, index) for o in ranks]
        # Each process takes its half of the one global batch, segment positions included.
        assert sorted(shares[0] + shares[1]) == sorted(whole.batch(epoch, index))
        assert not set(shares[0]) & set(shares[1])


def test_trains_under_accelerate_launch_with_two_processes(acoustic, features, corpus_dir, vocoder_config,
                                                           tmp_path) -> None:
    import socket

    from voxtrain.artifacts.layout import RunDir

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = RunDir(tmp_path / "ddp")
    train = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, "--until-step", "2")[2:]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", *train]
    result = subprocess.run(cmd, env=dict(_env(), CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [e["processes"] for e in events(run.root, "start")] == [2]
    assert sorted(records(run.root, "train")) == [1, 2]  # rank 0 records each step once
    state = torch.load(run.checkpoint(2), weights_only=True)
    assert state["step"] == 2 and state["mode"] == "vocoder"
