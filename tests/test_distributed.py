"""Two training processes under `accelerate launch` (torchrun + DDP over gloo): real launcher,
real processes, real signals.

How to launch on CPU: `accelerate launch --multi_gpu --num_processes 2 -m voxtrain.cli train
...`. The obvious `--cpu --num_processes 2` starts ONE process (accelerate's simple launcher
runs the script once unless given an mpirun hostfile), so it is not what these tests use.
The engine passes cpu=True to Accelerate when it finds WORLD_SIZE > 1 and no CUDA; without
that each torchrun worker would train alone, every one of them believing it is rank 0.

What "the same trajectory" means here. DDP averages the ranks' gradients, and each rank's
loss is a mean over its own micro-batch, so one step of 2 ranks x batch B x grad_accum A is
the mean of 2A micro-batch losses. One process reproduces exactly that objective with batch
B and grad_accum 2A. A single process at batch 2B does not: its loss is one mean over all
frames of the 2B utterances (long clips weigh more) and the sampler cuts and shuffles a
different batch list. Measured on this corpus (batch 4 x accum 2 against 2 ranks x 2 x 2)
that comparison differs by up to 2.4 % per step from batch composition alone, which would
hide real bugs such as a lost no_sync gradient.

The batches also coincide: the sampler builds one global list per epoch (it depends on the
seed, epoch and batch size, not on the world size) and rank r takes batches r, r+2, ...
With A micro-batches per step, step k of the 2-rank run uses batches 2Ak .. 2Ak+2A-1, split
between the ranks, exactly the batches of step k of the single process at grad_accum 2A,
as long as the epoch's batch count is even (the sampler drops an odd last batch on 2 ranks;
the test checks the count). Dropout is 0 because each rank draws its own dropout masks.

What remains is floating-point summation order: the 2-rank gradient is
((g0 + g2)/2 + (g1 + g3)/2)/2 after gloo's all-reduce, the 1-process one g0/4 + g1/4 + g2/4
+ g3/4 accumulated in .grad; fp32 rounds at ~6e-8 relative. Adam (which normalises tiny
gradient components) and the aligner's hard MAS path (a near-tie flips with a rounding
difference) amplify that over steps. Measured: steps 1-20 agree to <= 1.5e-7 relative
(loss and grad norm, most steps bitwise), steps 21-40 to <= 5e-6 (loss). Tolerances: 1e-5
for steps 1-20 on loss and grad norm, 1e-3 on the loss over all 40 steps. Both sit below
what real mistakes do: the other batch composition above moves the loss by a median 8e-3
per step (1e-4 to 2.4e-2) and the grad norm by a median 1e-2, a summed instead of
averaged gradient doubles the grad norm, and any wrong batch on step 1 or 2 shows at once.
"""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.store import FeatureStore
from voxtrain.ops.process import stop_trainer

TIGHT_STEPS, TIGHT, LOOSE = 20, 1e-5, 1e-3
MAX_STEPS = 40
NO_DROPOUT = {"dropout": 0.0, "predictor_dropout": 0.0}
SECTIONS = {
    "model": {  # MICRO_CONFIG's model without dropout
        "hidden": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 2, "conv_filter": 64, "conv_kernel": 3,
        "predictor_filter": 32, "variance_embedding_kernel": 3, **NO_DROPOUT,
        "aligner": {"attention_dim": 16, "binarization_start_step": 5, "binarization_ramp_steps": 5},
    },
    "training": {"max_steps": MAX_STEPS, "batch_size": 2, "grad_accum": 2, "validate_every": 10,
                 "save_every": 10, "sample_vocoder": "griffin-lim"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launched:
    """A conftest Trainer run under `accelerate launch` with two processes."""

    def __init__(self, trainer):
        self.t = trainer

    def cmd(self, *extra: str) -> list[str]:
        train = self.t.cmd(*extra)[2:]  # drop "python -m": accelerate's -m takes the module
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port()), "-m", *train]

    @staticmethod
    def _cpu_only(env: dict) -> dict:
        return dict(env, CUDA_VISIBLE_DEVICES="")  # gloo on CPU even where a GPU is present

    def run_to_end(self, env: dict, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*extra), env=self._cpu_only(env), capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)

    def start(self, env: dict, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*extra), env=self._cpu_only(env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def _train_records(t) -> list[dict]:
    return [r for r in t.metrics() if r["type"] == "train"]


def _losses(t) -> dict[int, float]:
    records = _train_records(t)
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"steps logged twice: {[s for s, n in Counter(steps).items() if n > 1]}"
    return {r["step"]: r["loss_total"] for r in records}


def _stop_events(t) -> list[dict]:
    return [r for r in t.metrics() if r["type"] == "event" and r.get("event") == "stop"]


@pytest.fixture(scope="module")
def two_ranks(features, tmp_path_factory):
    """One uninterrupted 2-process run, shared by the tests below."""
    if len(FeatureStore(features).split_indices("train")) % 4 in (1, 2):
        pytest.fail("the test corpus must give an even number of batches of 2 per epoch")
    from conftest import Trainer, _env, write_config  # trainer_factory is per test; this run is per module

    root = tmp_path_factory.mktemp("two_ranks")
    t = Trainer(features, root / "run", write_config(root / "run.yaml", **SECTIONS))
    t0 = time.perf_counter()
    r = Launched(t).run_to_end(_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return t, r, time.perf_counter() - t0


def test_two_ranks_follow_one_process_with_the_same_global_batches(two_ranks, trainer_factory):
    ranks2, r, _ = two_ranks
    assert "device cpu:0 x 2" in r.stderr, r.stderr[-3000:]
    one = trainer_factory("one", **{**SECTIONS, "training": {**SECTIONS["training"], "grad_accum": 4}})
    r1 = one.run_to_end()
    assert r1.returncode == 0, r1.stderr[-3000:]
    a, b = _losses(ranks2), _losses(one)
    assert sorted(a) == sorted(b) == list(range(1, MAX_STEPS + 1))
    assert all(math.isfinite(v) for v in a.values())
    # Logged losses describe the global batch (all ranks), not rank 0's half of it.
    drift = {s: abs(a[s] - b[s]) / abs(b[s]) for s in a}
    early = max(v for s, v in drift.items() if s <= TIGHT_STEPS)
    assert early <= TIGHT, f"steps 1-{TIGHT_STEPS}: 2 ranks drift from 1 process by {early:.2e} relative"
    assert max(drift.values()) <= LOOSE, f"2 ranks drift from 1 process by {max(drift.values()):.2e} relative"
    ga = {x["step"]: x["grad_norm"] for x in _train_records(ranks2)}
    gb = {x["step"]: x["grad_norm"] for x in _train_records(one)}
    worst = max(abs(ga[s] - gb[s]) / gb[s] for s in range(1, TIGHT_STEPS + 1))
    assert worst <= TIGHT, f"gradient norms differ by {worst:.2e} relative: not the same averaged gradient"
    fa = {x["step"]: x["frames_per_s"] / x["steps_per_s"] for x in _train_records(ranks2)}
    fb = {x["step"]: x["frames_per_s"] / x["steps_per_s"] for x in _train_records(one)}
    assert all(abs(fa[s] - fb[s]) <= 1e-6 * fb[s] for s in fa), "frames per step differ"


def test_only_rank_zero_writes_the_run_directory(two_ranks):
    t, r, _ = two_ranks
    run = RunDir(t.run)
    records = t.metrics()
    _losses(t)  # each train step once
    val_steps = [x["step"] for x in records if x["type"] == "val"]
    assert val_steps == [10, 20, 30, 40]
    events = Counter(x.get("event") for x in records if x["type"] == "event")
    assert events["start"] == 1 and events["stop"] == 1, events
    assert [s for s, _ in run.checkpoint_files()] == [30, 40]  # keep_last 2
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [
        "best.json", "best.safetensors", "ckpt-step00000030.pt", "ckpt-step00000040.pt"]
    assert sorted(p.name for p in run.samples.iterdir()) == [f"step_{s:07d}" for s in (10, 20, 30, 40)]
    expected = ["alignment.png", "sample_001.wav"]
    assert all(sorted(p.name for p in d.iterdir()) == expected for d in run.samples.iterdir())
    assert len(list(run.tensorboard.iterdir())) == 1, list(run.tensorboard.iterdir())
    assert run.config.is_file()
    assert len(json.loads(run.run_info.read_text())["sessions"]) == 1
    # One log file holds everything once. (Until the CLI stops opening a log file on ranks
    # other than 0, rank 1 may leave an empty one when the ranks start in different seconds.)
    logs = [p for p in run.logs.glob("train_*.log") if p.stat().st_size > 0]
    assert len(logs) == 1, logs
    lines = logs[0].read_text().splitlines()
    step_lines = Counter(m.group(1) for m in map(re.compile(r"INFO step (\d+)/").search, lines) if m)
    assert sorted(map(int, step_lines)) == list(range(1, MAX_STEPS + 1)) and set(step_lines.values()) == {1}
    assert sum("STARTING a new run" in x for x in lines) == 1
    # Rank 1 keeps its console to warnings: the launcher's output has each step once too.
    assert r.stderr.count("INFO step 7/") == 1


def test_sigterm_to_launcher_stops_every_rank_and_two_ranks_resume(two_ranks, trainer_factory, env):
    ref, _, _ = two_ranks
    t = trainer_factory("stopped", **SECTIONS)
    launched = Launched(t)

    # 1. SIGTERM to the launcher. torchrun's agent forwards it to every worker's process
    #    group (os.killpg; the workers run in their own sessions), waits for them (30 s
    #    shutdown timeout, then SIGKILL) and then re-raises the signal as SignalException.
    #    `accelerate launch` turns that into a failed exit even though every worker stopped
    #    cleanly: 128 + SIGTERM since accelerate 1.16, 1 with the traceback before it.
    #    A step of a full-size model can outlast those 30 s: TORCH_ELASTIC_SHUTDOWN_TIMEOUT
    #    raises them, or `voxtrain stop` (step 2) signals rank 0 alone and needs no timeout.
    proc = launched.start(env)
    t.wait_for_step(proc, 8)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    by_signal = proc.returncode == 128 + signal.SIGTERM
    assert by_signal or (proc.returncode == 1 and "SignalException" in out), (proc.returncode, out[-3000:])
    assert "forcefully exiting" not in out, "a worker ignored SIGTERM and was killed"
    assert out.count("SIGTERM received") == 2, out[-3000:]  # both ranks got it exactly once
    stop = _stop_events(t)[-1]
    first = stop["step"]
    assert stop["exit_code"] == 0 and stop["reason"] == "stopped by SIGTERM", stop
    assert 8 <= first < MAX_STEPS
    assert [s for s, _ in RunDir(t.run).checkpoint_files()][-1] == first

    # 2. Resume under 2 processes, then stop it the way `voxtrain stop` does: SIGTERM to
    #    the pid in the run's PID file (rank 0). The stop flag is reduced across ranks, so
    #    rank 1 stops at the same step, and the launcher exits 0.
    proc = launched.start(env)
    t.wait_for_step(proc, first + 3)
    assert stop_trainer(RunDir(t.run), timeout=60) == "stopped"
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert f"RESUMING from {RunDir(t.run).checkpoint(first)} (step {first})" in out, out[-3000:]
    second = _stop_events(t)[-1]["step"]
    assert first + 3 <= second < MAX_STEPS
    assert [s for s, _ in RunDir(t.run).checkpoint_files()][-1] == second

    # 3. Resume to the end: the three sessions log each step once and reproduce the
    #    unbroken 2-process run exactly (same process layout, exact resume).
    r = launched.run_to_end(env)
    assert r.returncode == 0 and f"(step {second})" in r.stderr, r.stderr[-3000:]
    assert _losses(t) == _losses(ref)
    sessions = json.loads(RunDir(t.run).run_info.read_text())["sessions"]
    assert [s["start_step"] for s in sessions] == [0, first, second]
