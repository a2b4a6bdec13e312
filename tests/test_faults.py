"""Training faults and signals as real processes: one non-finite step, a second SIGINT, a SIGKILL
in the middle of a save, and resumes that must be refused (or that ignore --init-from)."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from conftest import MICRO_CONFIG, assert_same, without_time
from voxtrain.artifacts.checkpoints import load_state
from voxtrain.artifacts.layout import RunDir, StoreLayout
from voxtrain.artifacts.store import FeatureStore
from voxtrain.config import config_from_dict
from voxtrain.data.loader import BucketBatchSampler

LONG = ("--set", "training.max_steps=100000")  # still running when the test signals it


# -- helpers ------------------------------------------------------------------------------
def wait_for(predicate, proc: subprocess.Popen | None, timeout: float, what: str):
    """conftest.wait_until, and the trainer killed when the wait fails (no process left behind)."""
    from conftest import wait_until

    try:
        return wait_until(predicate, timeout, what, proc)
    except AssertionError:
        if proc is not None and proc.poll() is None:
            proc.kill()
        raise


def temp_files(run: RunDir, pattern: str = ".ckpt-step*.pt.tmp*") -> list[Path]:
    return sorted(run.checkpoints.glob(pattern)) if run.checkpoints.is_dir() else []


def snapshot(run: RunDir) -> dict[str, bytes]:
    """Every file of the checkpoints folder, by name, and the run's config and metrics."""
    files = {p.name: p.read_bytes() for p in sorted(run.checkpoints.iterdir())}
    for p in (run.config, run.metrics):
        files[p.name] = p.read_bytes()
    return files


def events(trainer, name: str) -> list[dict]:
    return [r for r in trainer.metrics() if r["type"] == "event" and r["event"] == name]


# -- 1. one non-finite step ---------------------------------------------------------------
# Rebuilds the run's harness from the checkpoint before the skipped step (the engine and the
# acoustic task's own loader and step) and records the weights around the skipped step and the next one.
REPLAY = r"""
import copy, sys
from pathlib import Path
import torch
from voxtrain.config import load_config
from voxtrain.train.acoustic import AcousticOpener
from voxtrain.train.engine import Engine
from voxtrain.train.session import TrainOptions

features, run, config, out = (Path(a) for a in sys.argv[1:5])
t = Engine(AcousticOpener(TrainOptions(run_dir=run, features=features, config=load_config(config))), run)
batches = t.task.batches(t.epoch, t.batch_in_epoch)

def state():
    return {"model": {k: v.detach().clone() for k, v in t.task.model.state_dict().items()},
            "optimizer": copy.deepcopy(t.task.slots["model"].optimizer.state_dict())}

def one_step():
    drawn = [next(batches)[2] for _ in range(t.loop.grad_accum)]
    r = t.task.step(drawn, t.step)  # the skipped step does not count: both calls are step t.step + 1
    return [i for b in drawn for i in b.ids], bool(r.applied), float(r.losses["total"])

out_state = {"start_step": t.step, "before": state()}
out_state["skipped_ids"], out_state["skipped_applied"], out_state["skipped_loss"] = one_step()
out_state["after_skip"] = state()
out_state["next_ids"], out_state["next_applied"], _ = one_step()
out_state["after_next"] = state()
t.close()
torch.save(out_state, out)
"""


def _plan_single_skip(store: FeatureStore, batch_size: int, grad_accum: int, seed: int) -> tuple[str, int, int]:
    """A train clip whose poisoning makes exactly one step non-finite in a run of `target` steps:
    (clip id, steps applied before the skip, target). The sampler's order is a pure function of
    the seed, so this is what the run will draw (the run's own events are what the test asserts)."""
    train = store.split_indices("train")
    sampler = BucketBatchSampler([store.n_frames(i) for i in train], batch_size=batch_size, seed=seed)
    order = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        order += [[store.records[train[i]]["id"] for i in b] for b in sampler]
    steps = [sum(order[k:k + grad_accum], []) for k in range(0, len(order) - grad_accum + 1, grad_accum)]
    best = None
    for clip in sorted({c for s in steps for c in s}):
        hits = [k for k, s in enumerate(steps) if clip in s]
        if len(hits) < 2 or hits[0] < 1:
            continue
        before, after = hits[0], hits[1] - hits[0] - 1  # applied steps before the skip / until the next one
        if after >= 2 and (best is None or after > best[2] - best[1]):
            best = (clip, before, before + after)
    assert best is not None, "no clip of the test corpus yields a single skipped step"
    return best


def _poisoned_store(features: Path, out: Path, clip: str) -> Path:
    """A copy of a real feature store where one clip's mel has one +inf value, with the array's
    size and SHA-256 re-recorded (as prepare records them) so that the store opens."""
    shutil.copytree(features, out)
    store = FeatureStore(out)
    rec = next(r for r in store.records if r["id"] == clip)
    path = StoreLayout(out).shard_array(rec["shard"], "mel")
    mel = np.load(path)
    mel[rec["frame_offset"] + rec["n_frames"] // 2, 7] = np.inf
    np.save(path, mel)
    entry = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    complete, shard_meta = StoreLayout(out).complete, StoreLayout(out).shard_meta(rec["shard"])
    for marker, section, key in ((complete, "shard_files", path.name), (shard_meta, "files", "mel")):
        data = json.loads(marker.read_text(encoding="utf-8"))
        if isinstance(data.get(section), dict):  # stores of version 1 record no checksums
            data[section][key] = entry
            marker.write_text(json.dumps(data, indent=1), encoding="utf-8")
    assert not np.isfinite(FeatureStore(out).item(store.records.index(rec))["mel"]).all()
    return out


def test_one_nonfinite_step_is_skipped_and_training_continues_with_the_same_weights(trainer_factory, features,
                                                                                   tmp_path, env):
    micro = config_from_dict(MICRO_CONFIG).training
    clip, before, target = _plan_single_skip(FeatureStore(features), micro.batch_size, micro.grad_accum, micro.seed)
    t = trainer_factory("skip", training={"max_steps": target, "save_every": 1}, checkpoint={"keep_last": 100})
    t.features = store = _poisoned_store(features, tmp_path / "poisoned", clip)
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    skips = events(t, "nonfinite_skip")
    assert [(e["step"], e["consecutive"]) for e in skips] == [(before, 1)], skips
    assert f"non-finite loss/gradient at step {before + 1}: step skipped (1 in a row)" in r.stderr
    assert events(t, "stop")[-1]["reason"] == f"reached target step {target}"
    train = {rec["step"]: rec for rec in t.metrics() if rec["type"] == "train"}
    assert sorted(train) == list(range(1, target + 1))
    assert all(np.isfinite(rec["loss_total"]) for rec in train.values())
    assert train[target]["nonfinite_skipped"] == 1
    run = RunDir(t.run)
    assert [s for s, _ in run.checkpoint_files()] == list(range(1, target + 1))
    final = load_state(run.checkpoint(target))
    assert final["step"] == target and final["nonfinite_skipped"] == 1
    # The optimizer counted only applied steps: Adam's step is the run's step.
    assert all(int(s["step"]) == target for s in final["optimizers"]["model"]["state"].values())

    # Replay from the checkpoint before the skip: the skipped step leaves weights and optimizer
    # as they were, and the step after it is exactly the run's next checkpoint.
    replay_run = RunDir(tmp_path / "replay")
    replay_run.checkpoints.mkdir(parents=True)
    shutil.copy2(run.checkpoint(before), replay_run.checkpoint(before))
    out = tmp_path / "replay.pt"
    rr = subprocess.run([sys.executable, "-c", REPLAY, str(store), str(replay_run.root), str(t.config), str(out)],
                        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert rr.returncode == 0, rr.stderr
    rep = torch.load(out, weights_only=True)
    assert rep["start_step"] == before
    assert clip in rep["skipped_ids"] and not rep["skipped_applied"], (clip, rep["skipped_ids"])
    assert not np.isfinite(rep["skipped_loss"])
    assert_same(load_state(run.checkpoint(before))["model"], rep["before"]["model"], "checkpoint before the skip")
    assert_same(rep["before"], rep["after_skip"], "after the skipped step")
    assert rep["next_applied"] and clip not in rep["next_ids"]
    after = load_state(run.checkpoint(before + 1))
    assert_same(after["model"], rep["after_next"]["model"], "model after the next step")
    assert_same(after["optimizers"]["model"], rep["after_next"]["optimizer"], "optimizer after the next step")


# -- 2. a second SIGINT exits at once -------------------------------------------------------
def test_second_sigint_exits_at_once_and_keeps_the_last_good_checkpoint(trainer_factory, env):
    t = trainer_factory("sigint")
    run = RunDir(t.run)
    first = t.run_to_end("--until-step", "3")
    assert first.returncode == 0, first.stderr
    good = run.checkpoint(3)
    before = good.read_bytes()

    # Only the stop save is slow (save_every is 1000): it cannot finish within the test's wait.
    proc = t.start(*LONG, env=dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="120"))
    try:
        t.wait_for_step(proc, 4)
        proc.send_signal(signal.SIGINT)
        tmp = wait_for(lambda: temp_files(run, f".ckpt-step*.pt.tmp{proc.pid}"), proc, 120, "the stop save to start")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)  # the save alone would take 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT, out  # killed by the signal itself: no handler ran
    assert "SIGINT received: finishing the current step, saving" in out
    assert tmp[0].exists(), "the interrupted save leaves its temp file"
    assert [s for s, _ in run.checkpoint_files()] == [3]
    assert good.read_bytes() == before
    assert [e["step"] for e in events(t, "stop")] == [3]  # the killed session recorded no stop

    r = t.run_to_end("--until-step", "5")
    assert r.returncode == 0, r.stderr
    assert f"RESUMING from {good} (step 3)" in r.stderr, r.stderr
    assert f"removed {tmp[0].name} left by an interrupted save" in r.stderr
    assert not temp_files(run)
    assert load_state(run.checkpoint(5))["step"] == 5


# -- 3. SIGKILL mid-save, then an exact resume ----------------------------------------------
def test_resume_after_sigkill_mid_save_is_bitwise_exact_and_removes_the_temp_file(trainer_factory, env):
    sections = {"training": {"max_steps": 12, "save_every": 4}}
    straight = trainer_factory("straight", **sections)
    r = straight.run_to_end()
    assert r.returncode == 0, r.stderr
    ref = load_state(RunDir(straight.run).checkpoint(12))

    t = trainer_factory("killed", **sections)
    run = RunDir(t.run)
    proc = t.start(env=dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="8"))  # each save takes 8 s
    try:
        # The save of step 4 completes; the one of step 8 is killed while it writes.
        tmp = wait_for(lambda: temp_files(run, ".ckpt-step00000008.pt.tmp*"), proc, 180, "the step-8 save")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert tmp[0].exists() and [s for s, _ in run.checkpoint_files()] == [4]

    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    assert "(step 4)" in r.stderr and "RESUMING" in r.stderr, r.stderr
    said = f"removed {tmp[0].name} left by an interrupted save"
    assert said in r.stderr and said in run.latest_log_file().read_text()
    assert not tmp[0].exists() and not run.stale_temp_files()
    got = load_state(run.checkpoint(12))
    assert_same(without_time(ref), without_time(got))
    losses = {rec["step"]: rec["loss_total"] for rec in t.metrics() if rec["type"] == "train"}
    ref_losses = {rec["step"]: rec["loss_total"] for rec in straight.metrics() if rec["type"] == "train"}
    assert losses == ref_losses  # steps 5..8 of the killed session were redone identically


# -- 4. resumes that are refused, and --init-from on a run that has checkpoints ----------------
def test_resume_is_refused_after_a_model_audio_or_symbol_table_change(trainer_factory, features, tmp_path):
    t = trainer_factory("refuse")
    run = RunDir(t.run)
    assert t.run_to_end("--until-step", "3").returncode == 0
    kept = snapshot(run)

    r = t.run_to_end("--set", "model.hidden=64", "--until-step", "5")
    assert r.returncode == 1, r.stderr
    assert "another model architecture" in r.stderr
    assert "model.hidden: 64 in the config, 32 in the checkpoint" in r.stderr, r.stderr
    assert snapshot(run) == kept

    r = t.run_to_end("--set", "audio.fmax=7000", "--until-step", "5")
    assert r.returncode == 1, r.stderr
    assert "changes the audio settings" in r.stderr
    assert "audio.fmax: 8000.0 -> 7000.0" in r.stderr, r.stderr
    assert snapshot(run) == kept

    # `voxtrain prepare` always writes the built-in table (SymbolTable.default()), so through the
    # CLI a store with another table comes from another voxtrain version: the default table is
    # only ever extended at the end. Such a store is this one as an older version wrote it:
    # without the utterance boundary symbols appended last.
    old = tmp_path / "older-store"
    shutil.copytree(features, old)
    table = json.loads((old / "symbols.json").read_text(encoding="utf-8"))
    assert table["symbols"][-2:] == ["^", "$"]
    table["symbols"] = table["symbols"][:-2]
    (old / "symbols.json").write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")
    assert FeatureStore(old).fingerprint == FeatureStore(features).fingerprint  # same clips, other table
    t.features = old
    r = t.run_to_end("--until-step", "5")
    assert r.returncode == 1, r.stderr
    assert f"cannot resume from {run.checkpoint(3)}: the feature store uses a different symbol table" in r.stderr
    assert "missing from the store: ^ $" in r.stderr  # what changed, by symbol
    assert snapshot(run) == kept


def test_init_from_on_a_run_with_checkpoints_resumes_it_and_warns(trainer_factory):
    other = trainer_factory("other", training={"seed": 99})
    assert other.run_to_end("--until-step", "1").returncode == 0
    foreign = RunDir(other.run).checkpoint(1)

    t = trainer_factory("resumed")
    run = RunDir(t.run)
    assert t.run_to_end("--until-step", "3").returncode == 0
    mine = load_state(run.checkpoint(3))
    assert any(not torch.equal(v, load_state(foreign)["model"][k]) for k, v in mine["model"].items())

    r = t.run_to_end("--init-from", str(foreign), "--until-step", "5")
    assert r.returncode == 0, r.stderr
    assert (f"--init-from {foreign} ignored: {t.run} already has checkpoints, so this RESUMES it. "
            "Use a new --run to fine-tune.") in r.stderr, r.stderr
    assert f"RESUMING from {run.checkpoint(3)} (step 3)" in r.stderr
    assert "FINE-TUNING" not in r.stderr

    ref = trainer_factory("reference")
    assert ref.run_to_end("--until-step", "5").returncode == 0
    got, want = load_state(run.checkpoint(5)), load_state(RunDir(ref.run).checkpoint(5))
    assert got["mode"] == "train"
    assert_same(without_time(want), without_time(got))
    assert "init_from" not in json.loads(run.run_info.read_text())
