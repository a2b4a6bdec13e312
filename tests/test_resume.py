"""Exact resume, graceful stop and SIGKILL at chosen moments (between steps, right after a save,
in the middle of a save): real processes, real signals."""

from __future__ import annotations

import signal
import time
from collections import Counter

import torch

from conftest import OutputLines, save_temp_files, wait_until
from voxtrain.artifacts.checkpoints import CheckpointManager, load_state, verify_checkpoint
from voxtrain.artifacts.layout import RunDir


def _final_state(run) -> dict:
    files = RunDir(run).checkpoint_files()
    return load_state(files[-1][1])


def _losses(trainer) -> dict[int, float]:
    records = [(r["step"], r["loss_total"]) for r in trainer.metrics() if r["type"] == "train"]
    # A resume restarts exactly at its checkpoint's step: every step is logged once, in order, none twice.
    twice = sorted(step for step, n in Counter(step for step, _ in records).items() if n > 1)
    assert twice == [], f"steps logged more than once: {twice}"
    assert [step for step, _ in records] == list(range(1, len(records) + 1))
    return dict(records)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"weights differ at {k}"
    sa, sb = a["optimizers"]["model"]["state"], b["optimizers"]["model"]["state"]
    assert sa and sa.keys() == sb.keys(), (sorted(sa), sorted(sb))
    for param in sa:
        assert sa[param].keys() == sb[param].keys(), param
        for k in sa[param]:
            assert torch.equal(torch.as_tensor(sa[param][k]), torch.as_tensor(sb[param][k])), f"optimizer {k} differs"
    assert a["optimizers"]["model"]["param_groups"] == b["optimizers"]["model"]["param_groups"]


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
    run = RunDir(t.run)
    r = t.run_to_end("--until-step", "5")  # a first checkpoint, written at full speed
    assert r.returncode == 0, r.stderr
    first = run.checkpoint(5)
    before = first.read_bytes()
    # The resumed session's next save (step 10) would take 300 s.
    proc = t.start(env=dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="300"))
    out = OutputLines(proc.stdout)
    try:
        wait_until(lambda: save_temp_files(run.checkpoints), 120, "the step-10 save to be in flight", proc)
        proc.send_signal(signal.SIGTERM)
        # The handler has run (it prints this after resetting both signals to the default action).
        out.wait_for("SIGTERM received", 60)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.join(30)
    assert proc.returncode == -signal.SIGTERM, out.text  # killed by the signal itself: no handler ran
    assert took < 30, f"the second signal took {took:.1f}s to end a process whose save takes 300 s"
    [tmp] = save_temp_files(run.checkpoints)  # the save it interrupted, never finished
    assert tmp.name.startswith(".ckpt-step00000010.pt.tmp")
    assert [s for s, _ in run.checkpoint_files()] == [5] and first.read_bytes() == before
    state, path = CheckpointManager(run, _cfg(), log=lambda m: None).load_latest()
    assert path == first and state.step == 5


def _cfg():
    from voxtrain.config import CheckpointConfig

    return CheckpointConfig()


# Where each SIGKILL lands, in turn: right after a step was logged (saves at full speed), right
# after a checkpoint was written (in its rotation or the next step), in the middle of a save (slowed
# to minutes, so the temporary file in place proves the kill met the write).
MOMENTS = ("after a step", "after a save", "mid-save") * 4


def _saved_after(trainer, step: int) -> bool:
    return any(e["type"] == "event" and e["event"] == "checkpoint_saved" and e["step"] > step
               for e in trainer.metrics())


def test_sigkill_at_chosen_moments_always_leaves_a_resumable_run(trainer_factory, env):
    t = trainer_factory("killed", training={"save_every": 2, "max_steps": 100000})
    run = RunDir(t.run)
    steps_seen = []
    for moment in MOMENTS:
        latest = run.checkpoint_files()[-1][0] if run.checkpoint_files() else 0
        proc = t.start(env=dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="600") if moment == "mid-save" else env)
        try:
            if moment == "after a step":
                t.wait_for_step(proc, t.last_step() + 1)
            elif moment == "after a save":  # a checkpoint newer than the last one can only be this session's
                wait_until(lambda after=latest: _saved_after(t, after), 120, "a new checkpoint", proc)
            else:
                wait_until(lambda: save_temp_files(run.checkpoints), 120, "a save in flight", proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        in_flight = [p.name for p in save_temp_files(run.checkpoints)]
        files = run.checkpoint_files()
        newest = files[-1][0] if files else 0
        if moment == "mid-save":  # killed in the write of this session's first save
            assert in_flight == [f".{run.checkpoint(latest + 2).name}.tmp{proc.pid}"], in_flight
            assert newest == latest
        elif moment == "after a save":
            assert newest > latest
        for _, path in files:
            assert not verify_checkpoint(path), f"{path.name} is corrupt after a kill {moment}"
        found = CheckpointManager(run, _cfg(), log=lambda m: None).load_latest()
        if files:
            assert found is not None and found[1] == files[-1][1], "checkpoints exist but the newest does not load"
            steps_seen.append(found[0].step)
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] >= 8, steps_seen
    # And the run resumes from the newest checkpoint, clearing the last killed save's temporary file.
    r = t.run_to_end("--until-step", str(steps_seen[-1] + 2))
    assert r.returncode == 0 and f"(step {steps_seen[-1]})" in r.stderr, r.stderr
    assert "left by an interrupted save" in r.stderr and save_temp_files(run.checkpoints) == []
