"""`voxtrain train-vocoder` on the run harness, as real processes on the micro corpus: what
`train` has, it has (detach, status, stop, faults, disk guard, several processes), and its
critics and starting generator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

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
    without_time,
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


ADVERSARIAL = ("--set", "vocoder_training.critic=spectral", "--set", "vocoder_training.critic_warmup_steps=2",
               "--set", "vocoder_training.adversarial_ramp_steps=2")


def test_adversarial_training_resumes_bitwise_after_sigterm(acoustic, features, corpus_dir, vocoder_config,
                                                            tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir

    reference = RunDir(tmp_path / "reference")
    straight = run_cmd(vocoder_cmd(acoustic, features, corpus_dir, reference.root, vocoder_config, *ADVERSARIAL))
    assert straight.returncode == 0, straight.stderr
    # After the warm-up (steps 1-2) the generator also learns from the critic.
    train = records(reference.root, "train")
    assert "loss_critic" in train[1] and "loss_adversarial" not in train[2] and "loss_adversarial" in train[3]

    run = RunDir(tmp_path / "interrupted")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *ADVERSARIAL)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    output = OutputLines(proc.stdout)
    try:
        wait_until(lambda: max(records(run.root, "train"), default=0) >= 3, 240, "step 3", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, output.text
    finally:
        if proc.poll() is None:
            proc.kill()
    output.join(timeout=10)
    stopped_at = run.checkpoint_files()[-1][0]
    assert 3 <= stopped_at < 6
    resumed = run_cmd(cmd)
    assert resumed.returncode == 0, resumed.stderr
    got = torch.load(run.checkpoint(6), weights_only=True)
    want = torch.load(reference.checkpoint(6), weights_only=True)
    assert set(got["critics"]) == {"critic"} and set(got["optimizers"]) == {"model", "critic"}
    # Generator, critic, both optimizers and every RNG: bitwise those of the unbroken run.
    assert_same(without_time(want), without_time(got))


def test_a_critic_can_start_from_another_runs_critic(acoustic, features, corpus_dir, vocoder_config,
                                                     tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir

    seed = RunDir(tmp_path / "seed")
    first = run_cmd([*vocoder_cmd(acoustic, features, corpus_dir, seed.root, vocoder_config, *ADVERSARIAL),
                     "--until-step", "2"])
    assert first.returncode == 0, first.stderr
    given = seed.checkpoint(2)
    # A critic LR far below float32's resolution leaves the started critic exactly as it was given.
    run = RunDir(tmp_path / "seeded")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *ADVERSARIAL, "--set",
                      f"vocoder_training.critic_from={given}", "--set", "vocoder_training.critic_lr=1e-30",
                      "--until-step", "1")
    seeded = run_cmd(cmd)
    assert seeded.returncode == 0, seeded.stderr
    assert f"critic started from {given} (step 2)" in seeded.stderr
    assert_same(torch.load(given, weights_only=True)["critics"],
                torch.load(run.checkpoint(1), weights_only=True)["critics"])

    refused = run_cmd([*vocoder_cmd(acoustic, features, corpus_dir, tmp_path / "refused", vocoder_config,
                                    *ADVERSARIAL), "--set", f"vocoder_training.critic_from={acoustic}"])
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"vocoder_training.critic_from: {acoustic} holds no critic" in refused.stderr


def test_the_vocoder_is_chosen_by_ear_its_start_and_its_best(acoustic, features, corpus_dir, vocoder_config,
                                                              tmp_path) -> None:
    """The starting generator is the bundled one whose copy-synthesis of the speaker's clips the
    ear prefers. With checkpoint.best_by a listening score, the voice (the acoustic model with the
    generator in training) is scored at every validation, and the best generator is the one the
    ear prefers, whatever its mel error: a critic moves the two apart."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.weights import load_weights

    run = RunDir(tmp_path / "auto")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *sets(
        "vocoder_training.start=auto", "vocoder_training.start_clips=2", "evaluation.enabled=true",
        "evaluation.sentences=2", "evaluation.scorers=[dnsmos]", "checkpoint.best_by=dnsmos_ovrl",
        "vocoder_training.validate_every=3"))
    result = run_cmd(cmd)
    assert result.returncode == 0, result.stderr
    info = json.loads(run.run_info.read_text())["start_generator"]
    start = {name: s["dnsmos_ovrl"] for name, s in info["scores"].items()}
    assert set(start) == {"ljspeech", "universal"} and info["name"] == max(start, key=start.get), info
    assert "starting vocoder" in result.stderr  # the pre-flight row says which, and why
    # The run uses what pre-flight chose (config.yaml records it) and its checkpoint says so.
    assert yaml.safe_load(run.config.read_text())["vocoder_training"]["start"] == info["name"]
    assert torch.load(run.checkpoint(6), weights_only=True)["start_generator"] == info["name"]

    heard = {step: r["dnsmos_ovrl"] for step, r in records(run.root, "eval").items()}
    assert sorted(heard) == [0, 3, 6], heard
    best = events(run.root, "best_exported")
    top = max(heard, key=heard.get)
    assert best[-1]["best_by"] == "dnsmos_ovrl" and best[-1]["step"] == top, (best, heard)
    assert best[-1]["value"] == heard[top], best  # ranked by the ear's score, not by val_mel
    assert load_weights(run.best_export)[1]["vocoder_step"] == best[-1]["step"]


def sets(*values: str) -> list[str]:
    return [x for v in values for x in ("--set", v)]


def test_joint_fine_tuning_trains_both_models_resumes_bitwise_and_ships_both(acoustic, features, corpus_dir,
                                                                               vocoder_config, tmp_path) -> None:
    """vocoder_training.joint: the acoustic model learns through the generator. The checkpoint
    holds both models and resumes bitwise; the best voice is the jointly trained acoustic model
    beside its generator; a resume that changes the setting is refused by name."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.weights import load_weights
    joint = sets("vocoder_training.joint=true", "vocoder_training.max_steps=4")
    reference = RunDir(tmp_path / "reference")
    straight = run_cmd(vocoder_cmd(acoustic, features, corpus_dir, reference.root, vocoder_config, *joint))
    assert straight.returncode == 0, straight.stderr
    final = torch.load(reference.checkpoint(4), weights_only=True)
    base = load_weights(acoustic)[0]
    trained = {k.removeprefix("acoustic."): v for k, v in final["model"].items() if k.startswith("acoustic.")}
    assert set(trained) == set(base) and any(k.startswith("generator.") for k in final["model"])
    assert not all(torch.equal(trained[k], base[k]) for k in base)  # the acoustic model learned
    assert "loss_acoustic" in records(reference.root, "train")[1]

    run = RunDir(tmp_path / "interrupted")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *joint)
    assert run_cmd([*cmd, "--until-step", "2"]).returncode == 0
    changed = run_cmd([*cmd, "--set", "vocoder_training.joint=false"])
    assert changed.returncode == 1 and "Traceback" not in changed.stderr, changed.stderr
    assert "vocoder_training.joint" in changed.stderr and "resume with the run's own setting" in changed.stderr
    resumed = run_cmd(cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(without_time(final), without_time(torch.load(run.checkpoint(4), weights_only=True)))

    # The best voice: acoustic weights and generator from the same step, as synth loads them.
    step = events(reference.root, "best_exported")[-1]["step"]
    source = base if step == 0 else trained
    weights, meta = load_weights(reference.best_export)
    assert meta["vocoder_step"] == step and meta["acoustic_joint_step"] == step
    assert_same(source, weights)
    if step:
        exported = torch.load(reference.vocoder_export, weights_only=True)["generator"]
        assert_same({k.removeprefix("generator."): v for k, v in final["model"].items()
                     if k.startswith("generator.")}, exported)
