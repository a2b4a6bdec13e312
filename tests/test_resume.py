"""Exact resume, graceful stop and SIGKILL at random moments: real processes, real signals."""

from __future__ import annotations

import random
import signal
import time

import torch

from voxtrain.artifacts.checkpoints import CheckpointManager, load_state, verify_checkpoint
from voxtrain.artifacts.layout import RunDir


def _final_state(run) -> dict:
    files = RunDir(run).checkpoint_files()
    return load_state(files[-1][1])


def _losses(trainer) -> dict[int, float]:
    out = {}
    for r in trainer.metrics():
        if r["type"] == "train":
            out[r["step"]] = r["loss_total"]  # a resumed run re-logs nothing: one record per step
    return out


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"weights differ at {k}"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), f"optimizer {k} differs"


def test_exact_resume_after_sigterm_and_stage_target(trainer_factory):
    straight = trainer_factory("straight")
    r = straight.run_to_end()
    assert r.returncode == 0, r.stderr
    ref = _final_state(straight.run)
    assert ref["step"] == 40

    # Stage target in the middle of an epoch (5 train batches per epoch, 2 per step).
    staged = trainer_factory("staged")
    assert staged.run_to_end("--until-step", "23").returncode == 0
    mid = _final_state(staged.run)
    assert mid["step"] == 23 and 0 < mid["batch_in_epoch"] < 6, mid["batch_in_epoch"]
    r = staged.run_to_end()
    assert r.returncode == 0 and "RESUMING" in r.stderr, r.stderr
    _assert_same_weights(ref, _final_state(staged.run))
    assert _losses(staged) == _losses(straight)

    # SIGTERM at whatever step the signal lands on, then resume.
    stopped = trainer_factory("stopped")
    proc = stopped.start()
    stopped.wait_for_step(proc, 18)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    at = _final_state(stopped.run)
    assert 18 <= at["step"] < 40, at["step"]
    assert "SIGTERM received" in out
    r = stopped.run_to_end()
    assert r.returncode == 0, r.stderr
    _assert_same_weights(ref, _final_state(stopped.run))
    assert _losses(stopped) == _losses(straight)
    # The LR schedule continued instead of restarting its warm-up.
    lrs = {rec["step"]: rec["lr"] for rec in stopped.metrics() if rec["type"] == "train"}
    ref_lrs = {rec["step"]: rec["lr"] for rec in straight.metrics() if rec["type"] == "train"}
    assert lrs == ref_lrs


def test_second_signal_exits_at_once_and_keeps_last_good_checkpoint(trainer_factory, env):
    t = trainer_factory("twice", training={"save_every": 5, "max_steps": 400})
    env = dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="3")
    proc = t.start(env=env)
    run = RunDir(t.run)
    deadline = time.time() + 120
    # Wait for a first complete checkpoint, then for the next save to be in flight.
    while not run.checkpoint_files() and time.time() < deadline:
        time.sleep(0.05)
    first = run.checkpoint_files()[0][1]
    before = first.read_bytes()
    while not list(run.checkpoints.glob(".ckpt-*.tmp*")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.time() - t0 < 2.5, "second signal must exit at once, not after the slow save"
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, out  # killed by the signal itself: no handler ran
    assert first.read_bytes() == before
    state, path = CheckpointManager(run, _cfg(), log=lambda m: None).load_latest()
    assert path == first and state["step"] == 5


def _cfg():
    from voxtrain.config import CheckpointConfig

    return CheckpointConfig()


def test_sigkill_at_random_moments_always_leaves_a_resumable_run(trainer_factory, env):
    t = trainer_factory("killed", training={"save_every": 2, "max_steps": 100000})
    env = dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="0.4")
    run = RunDir(t.run)
    rng = random.Random(7)
    kills, during_save, steps_seen = 0, 0, []
    while kills < 20:
        proc = t.start(env=env)
        # Kill at a random moment after the loop is running (saves take ~40% of the time).
        t.wait_for_step(proc, t.last_step() + 1, timeout=120)
        time.sleep(rng.uniform(0.0, 0.8))
        in_flight = bool(list(run.checkpoints.glob(".ckpt-*.tmp*")))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        kills += 1
        during_save += in_flight
        latest = CheckpointManager(run, _cfg(), log=lambda m: None).load_latest()
        if run.checkpoint_files():
            assert latest is not None, "checkpoints exist but none loads"
            for _, path in run.checkpoint_files():
                assert not verify_checkpoint(path), f"{path.name} is corrupt"
            steps_seen.append(latest[0]["step"])
    assert during_save >= 3, f"only {during_save} of {kills} kills landed during a save"
    assert steps_seen and steps_seen == sorted(steps_seen) and steps_seen[-1] > 0
    # And the run resumes from the newest checkpoint.
    r = t.run_to_end("--until-step", str(steps_seen[-1] + 2))
    assert r.returncode == 0 and f"(step {steps_seen[-1]})" in r.stderr, r.stderr
