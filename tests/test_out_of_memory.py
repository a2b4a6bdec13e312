"""A batch that does not fit: the step is redone in smaller micro-batches, or the run stops
saved, with a message that names the settings to change."""

from __future__ import annotations

from voxtrain.artifacts.checkpoints import load_state
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.store import FeatureStore


def _lengths(features) -> list[int]:
    store = FeatureStore(features)
    return [store.n_frames(i) for i in store.split_indices("train")]


def test_a_batch_that_does_not_fit_is_split_and_the_step_stays_one_step(trainer_factory, features, env):
    # Any single clip fits, two of the longest do not: the engine must split to go on.
    env["VOXTRAIN_TEST_OOM_ABOVE_FRAMES"] = str(max(_lengths(features)))
    t = trainer_factory("oom_split", training={"max_steps": 6, "save_every": 6, "batch_size": 4, "grad_accum": 1})
    r = t.run_to_end(env=env)
    assert r.returncode == 0, r.stderr
    retries = [e for e in t.metrics() if e["type"] == "event" and e["event"] == "out_of_memory_retry"]
    assert retries and "retrying the step as" in r.stderr and "training.batch_size" in r.stderr
    steps = [rec["step"] for rec in t.metrics() if rec["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # every retried step is still exactly one optimizer step
    state = load_state(RunDir(t.run).checkpoint(6))
    assert all(int(s["step"]) == 6 for s in state["optimizers"]["model"]["state"].values())


def test_when_even_one_clip_does_not_fit_the_run_stops_saved_and_says_what_to_change(trainer_factory, features,
                                                                                      env):
    env["VOXTRAIN_TEST_OOM_ABOVE_FRAMES"] = str(min(_lengths(features)) - 1)
    t = trainer_factory("oom_stop", training={"max_steps": 6, "save_every": 6})
    r = t.run_to_end(env=env)
    assert r.returncode == 5, r.stderr
    assert "out of memory at step 1" in r.stderr and "training.batch_size (2)" in r.stderr
    assert "training.grad_accum (2)" in r.stderr and "Traceback" not in r.stderr
    stop = [e for e in t.metrics() if e["type"] == "event" and e["event"] == "stop"][-1]
    assert stop["exit_code"] == 5 and "out of memory" in stop["reason"]
    assert RunDir(t.run).checkpoint_files()  # the last good weights (step 0) are on disk
