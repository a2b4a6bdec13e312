"""Disk guard on a real small filesystem, rotation, export, fine-tuning, non-finite guard, security."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import Hog, initial_weights, wait_event
from voxtrain.artifacts.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_state,
    verify_checkpoint,
)
from voxtrain.artifacts.layout import RunDir
from voxtrain.atomic import write_atomic


def test_write_atomic_on_full_filesystem_raises_enospc_and_leaves_nothing(small_fs):
    target = small_fs / "big.bin"
    with pytest.raises(OSError) as err:
        write_atomic(b"x" * (32 << 20), target)
    assert err.value.errno == errno.ENOSPC
    assert list(small_fs.iterdir()) == []


class _Watcher(threading.Thread):
    """Checks, every few ms, that a run never has zero valid checkpoints after its first."""

    def __init__(self, rundir: RunDir):
        super().__init__(daemon=True)
        self.rundir, self.stop, self.violations, self.seen_one = rundir, threading.Event(), 0, False

    def _any_valid(self) -> bool:
        return any(not verify_checkpoint(p) for _, p in self.rundir.checkpoint_files())

    def run(self) -> None:
        while not self.stop.is_set():
            if self._any_valid():
                self.seen_one = True
            elif self.seen_one and not self._any_valid():  # twice: a listing can race a rename
                self.violations += 1
            time.sleep(0.005)


# The reasons of the two kinds of skipped save (checkpoint_skipped events).
PRE_CHECK, WRITE_ENOSPC = "not enough free disk space", "disk full (ENOSPC) while writing"


def test_disk_full_prunes_then_skips_and_never_loses_the_last_checkpoint(trainer_factory, small_fs, env):
    # The run directory lives on a real 16 MB tmpfs, filled up while the trainer runs.
    t = trainer_factory("full", training={"save_every": 1, "max_steps": 100000}, checkpoint={"keep_last": 3})
    t.run = small_fs / "run"
    run = RunDir(t.run)
    watcher = _Watcher(run)
    watcher.start()
    proc = t.start(env=dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="0.05"))
    try:
        wait_event(t, proc, lambda e: e["event"] == "checkpoint_pruned" and e["reason"] == "rotation")
        size = run.checkpoint_files()[-1][1].stat().st_size

        # Another tenant fills the disk and keeps eating what is freed: each save first prunes the
        # oldest checkpoint, until only the newest is left; then saves are skipped loudly,
        # training goes on, and the newest checkpoint survives.
        hog = Hog(small_fs, leave=size // 2)
        hog.start()
        wait_event(t, proc, lambda e: e["event"] == "checkpoint_pruned" and e["reason"] == "disk space")
        first_skip = wait_event(t, proc, lambda e: e["event"] == "checkpoint_skipped")
        t.wait_for_step(proc, first_skip["step"] + 5)
        kept = [s for s, _ in run.checkpoint_files()]
        assert len(kept) == 1 and kept[0] < first_skip["step"]
        hog.stop.set()
        hog.join()

        # Space comes back: saving resumes by itself.
        (small_fs / "filler.bin").unlink()
        wait_event(t, proc, lambda e: e["event"] == "checkpoint_saved" and e["step"] > first_skip["step"] + 5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        watcher.stop.set()
        watcher.join()
    assert proc.returncode == 0, out
    events = [e for e in t.metrics() if e["type"] == "event"]
    skips = [e for e in events if e["event"] == "checkpoint_skipped"]
    for e in skips:
        # Every skip is one of the guard's two cases, about a checkpoint of the real size, and says so loudly.
        assert e["reason"] in (PRE_CHECK, WRITE_ENOSPC), e
        assert abs(e["bytes"] - size) < size // 100, (e, size)
        assert f"checkpoint at step {e['step']} SKIPPED: {e['reason']} (needs {e['bytes'] / 2**20:.1f} MB" in out
    # After the first skip only the newest checkpoint is left, nothing can be pruned and the hog keeps
    # the disk at most half a checkpoint free (it ran until step first + 5 was logged, so through the
    # saves of the 4 steps before): the guard must refuse those saves up front, not try the write and
    # hit ENOSPC, and the free space it recorded must really be short of the checkpoint's size.
    steady = [e for e in skips if first_skip["step"] < e["step"] < first_skip["step"] + 5]
    assert [e["step"] for e in steady] == list(range(first_skip["step"] + 1, first_skip["step"] + 5))
    assert all(e["reason"] == PRE_CHECK and e["free"] < e["bytes"] for e in steady), steady
    assert watcher.seen_one
    assert watcher.violations == 0, "the run had zero valid checkpoints at some moment"


def test_corrupt_newest_checkpoint_is_reported_and_previous_used(trainer_factory):
    t = trainer_factory("corrupt", training={"save_every": 3, "max_steps": 9})
    assert t.run_to_end().returncode == 0
    run = RunDir(t.run)
    newest = run.checkpoint_files()[-1][1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    r = t.run_to_end("--until-step", "9", "--set", "training.max_steps=12")
    assert r.returncode == 0, r.stderr
    assert f"skipping corrupt checkpoint {newest.name}" in r.stderr
    assert "(step 6)" in r.stderr
    assert newest.exists(), "a corrupt checkpoint is never deleted silently"


def _mels(path: Path, texts: list[str]) -> list[torch.Tensor]:
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer

    return Synthesizer(load_acoustic_model(path), "none", precision="fp32").mels(texts)


def test_rotation_best_export_listing_and_synth(trainer_factory, tmp_path):
    t = trainer_factory("rot", training={"save_every": 4, "validate_every": 4, "max_steps": 16,
                                         "sample_vocoder": "griffin-lim", "scheduler": "constant",
                                         "warmup_steps": 0, "lr": 0.03})
    r = t.run_to_end("--until-step", "4")
    assert r.returncode == 0, r.stderr
    # From step 4 on an LR far too high wrecks the model (deterministically: one CPU thread), so every
    # later validation is worse and the best checkpoint is older than the keep_last=2 newest ones.
    r = t.run_to_end("--set", "training.lr=1.0")
    assert r.returncode == 0, r.stderr
    val = {rec["step"]: rec["loss_mel"] for rec in t.metrics() if rec["type"] == "val"}
    assert sorted(val) == [4, 8, 12, 16] and all(val[s] > val[4] for s in (8, 12, 16)), val
    run = RunDir(t.run)
    # Rotation deleted step 8 but kept the old best, step 4, beside the two newest.
    assert [s for s, _ in run.checkpoint_files()] == [4, 12, 16]
    assert load_state(run.checkpoint(16))["best"]["step"] == 4
    infos = list_checkpoints(run, verify=True)
    assert [(i.step, i.best, i.valid) for i in infos] == [(4, True, True), (12, False, True), (16, False, True)]
    # The best export holds the best step's weights, not the newest ones.
    from voxtrain.artifacts.weights import load_weights

    best_weights, best_meta = load_weights(run.best_export)
    assert best_meta["step"] == 4
    ckpt4 = load_state(run.checkpoint(4))["model"]
    assert best_weights.keys() == ckpt4.keys() and all(torch.equal(best_weights[k], ckpt4[k]) for k in ckpt4)
    assert (run.sample_dir(16) / run.sample_name(0)).is_file()

    listing = subprocess.run([sys.executable, "-m", "voxtrain.cli", "checkpoints", str(t.run)],
                             capture_output=True, text=True, env=dict(os.environ, COLUMNS="160"))
    assert listing.returncode == 0, listing.stderr
    rows = {line.split("│")[1].strip(): line for line in listing.stdout.splitlines() if line.count("│") > 3}
    assert set(rows) == {"4", "12", "16"}, listing.stdout
    assert "best" in rows["4"] and "best" not in rows["12"] + rows["16"], listing.stdout
    assert "total checkpoint disk use" in listing.stdout

    out = tmp_path / "export" / "voice.safetensors"
    e = subprocess.run([sys.executable, "-m", "voxtrain.cli", "export", str(run.checkpoint(4)), str(out),
                        "--fp16"], capture_output=True, text=True)
    assert e.returncode == 0, e.stderr
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    assert stored.keys() == ckpt4.keys()
    assert {v.dtype for v in stored.values()} == {torch.float16}  # the model holds only float tensors
    assert all(torch.equal(stored[k], ckpt4[k].half()) for k in ckpt4)  # fp16 rounding, nothing else
    # The fp16 voice says the same as the fp32 checkpoint. Measured: mean |diff| 2.2e-4, max 7.7e-4
    # (log-mel, |mel| ~3.4); rounding the weights to bf16 instead already gives a mean of 2.4e-3.
    texts = ["Hello there.", "The quick brown fox jumps over the lazy dog."]
    for half, full in zip(_mels(out, texts), _mels(run.checkpoint(4), texts), strict=True):
        assert half.shape == full.shape
        diff = (half - full).abs()
        assert diff.mean() < 1e-3 and diff.max() < 5e-3, (diff.mean(), diff.max())
    wav = tmp_path / "hi.wav"
    s = subprocess.run([sys.executable, "-m", "voxtrain.cli", "synth", "--checkpoint", str(out), "--text",
                        "Hello there.", "--out", str(wav), "--vocoder", "griffin-lim"], capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    import soundfile as sf

    info = sf.info(wav)
    assert info.samplerate == 22050 and info.frames > 0


def test_finetune_is_weights_only_with_constant_low_lr(trainer_factory):
    base = trainer_factory("base", training={"save_every": 10, "max_steps": 10})
    assert base.run_to_end().returncode == 0
    ckpt = RunDir(base.run).checkpoint(10)
    ft = trainer_factory("ft", training={"max_steps": 6, "save_every": 6}, finetune={"lr": 3e-5})
    r = ft.run_to_end("--init-from", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "FINE-TUNING from" in r.stderr
    lrs = [rec["lr"] for rec in ft.metrics() if rec["type"] == "train"]
    assert lrs == [3e-5] * 6
    state = load_state(RunDir(ft.run).checkpoint(6))
    assert state["mode"] == "finetune" and state["step"] == 6
    # A fresh optimizer: Adam's step counters count only the fine-tune's steps.
    assert all(int(s["step"]) == 6 for s in state["optimizers"]["model"]["state"].values())
    # Resuming the fine-tune run says so and keeps its settings.
    r = ft.run_to_end("--set", "training.max_steps=8")
    assert r.returncode == 0 and "RESUMING fine-tune" in r.stderr, r.stderr


FINETUNE_YAML = Path(__file__).resolve().parents[1] / "configs" / "finetune.yaml"
# Enough to make configs/finetune.yaml run in seconds on the micro corpus; the model is not touched.
QUICK = ("--set", "training.max_steps=2", "--set", "training.save_every=2", "--set", "training.batch_size=2",
         "--set", "training.precision=fp32", "--set", "training.sample_vocoder=none")


def test_finetune_yaml_takes_the_architecture_from_the_checkpoint(trainer_factory, features, tmp_path):
    import yaml

    from conftest import Trainer

    base = trainer_factory("arch_base", training={"save_every": 2, "max_steps": 2})
    assert base.run_to_end().returncode == 0
    ckpt = RunDir(base.run).checkpoint(2)
    micro = load_state(ckpt)["config"]["model"]
    assert micro["hidden"] == 32  # finetune.yaml has no model size: the default (256) would not load

    ft = Trainer(features, tmp_path / "arch_ft", FINETUNE_YAML)
    r = ft.run_to_end("--init-from", str(ckpt), *QUICK, "--set", "model.dropout=0.2")
    assert r.returncode == 0, r.stderr
    used = yaml.safe_load((tmp_path / "arch_ft" / "config.yaml").read_text())["model"]
    assert {k: v for k, v in used.items() if k not in ("dropout", "aligner")} == \
        {k: v for k, v in micro.items() if k not in ("dropout", "aligner")}
    assert used["dropout"] == 0.2  # a training-behaviour setting is the config's to give
    assert used["aligner"]["binarization_start_step"] == 0 and used["aligner"]["attention_dim"] == 16
    assert load_state(RunDir(ft.run).checkpoint(2))["config"]["model"] == used

    clash = Trainer(features, tmp_path / "arch_clash", FINETUNE_YAML)
    # Pre-flight refuses it first, in a table row; wide enough that the row is not folded.
    r = clash.run_to_end("--init-from", str(ckpt), *QUICK, "--set", "model.hidden=64",
                         env=dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="400"))
    assert r.returncode == 1
    assert "model.hidden: 64 in the config, 32 in the checkpoint" in r.stderr
    assert not (tmp_path / "arch_clash" / "checkpoints").exists() or not RunDir(clash.run).checkpoint_files()


def test_finetune_mismatch_is_named_and_refused_unless_skipped(trainer_factory):
    base = trainer_factory("base2", training={"save_every": 2, "max_steps": 2})
    assert base.run_to_end().returncode == 0
    ckpt = RunDir(base.run).checkpoint(2)
    # A postnet the base does not have (missing tensors) and narrower variance predictors (other shapes).
    ft = trainer_factory("ft2", model={"postnet_layers": 2, "postnet_channels": 16, "predictor_filter": 24},
                         training={"max_steps": 2, "save_every": 2})
    # Pre-flight names it first, in a table row; wide enough that the row is not folded.
    r = ft.run_to_end("--init-from", str(ckpt), env=dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="400"))
    assert r.returncode != 0
    assert "postnet" in r.stderr and "--skip-mismatched" in r.stderr
    assert not RunDir(ft.run).checkpoint_files()
    # An LR of 1e-12 moves no weight of this size by a float32 ulp: after 2 steps the fine-tune's
    # checkpoint holds the weights it started from, within 1e-9.
    r = ft.run_to_end("--init-from", str(ckpt), "--skip-mismatched", "--set", "finetune.lr=1e-12")
    assert r.returncode == 0, r.stderr
    state = load_state(RunDir(ft.run).checkpoint(2))
    got, base_w = state["model"], load_state(ckpt)["model"]
    init = initial_weights(state)
    assert got.keys() == init.keys()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-9)

    loaded = sorted(k for k in got if k in base_w and base_w[k].shape == got[k].shape)
    fresh = sorted(set(got) - set(loaded))
    assert {k.split(".")[0] for k in fresh} == {"postnet", "duration_predictor", "pitch_predictor",
                                                 "energy_predictor"}, fresh
    assert any(k.startswith("encoder") for k in loaded) and any(k.startswith("decoder") for k in loaded)
    assert [k for k in loaded if not same(got[k], base_w[k])] == []  # taken from the base
    assert [k for k in fresh if not same(got[k], init[k])] == []  # freshly initialised...
    assert all(not same(got[k], base_w[k]) for k in fresh if k in base_w)  # ...not (a slice of) the base's
    assert all(not same(init[k], base_w[k]) for k in loaded)  # (init and base differ: the checks can tell)
    for line in ("postnet.convs.0.conv.weight: missing from",
                 "pitch_predictor.convs.0.conv.weight: shape (32, 32, 3) in"):
        assert f"init-from: skipped {line}" in r.stderr, r.stderr


def test_nonfinite_steps_are_skipped_then_the_run_saves_and_stops(trainer_factory):
    t = trainer_factory("nan", training={"lr": 1e12, "scheduler": "constant", "warmup_steps": 0,
                                         "grad_clip": 0, "max_nonfinite_steps": 3, "max_steps": 200})
    r = t.run_to_end()
    assert r.returncode == 3, r.stderr
    assert "consecutive steps had a non-finite loss" in r.stderr and "training.lr" in r.stderr
    skips = [e for e in t.metrics() if e["type"] == "event" and e["event"] == "nonfinite_skip"]
    assert len(skips) >= 3 and skips[-1]["consecutive"] == 3
    state = load_state(RunDir(t.run).checkpoint_files()[-1][1])
    assert state["nonfinite_skipped"] >= 3
    # The saved weights are the last good ones: the skipped steps changed nothing.
    assert state["step"] == skips[-1]["step"]
    bad = [k for k, v in state["model"].items() if not torch.isfinite(v).all()]
    assert bad == [], f"non-finite weights saved: {bad}"
    moments = [v for s in state["optimizers"]["model"]["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert moments and all(torch.isfinite(v).all() for v in moments)


def test_crafted_pickle_is_refused_everywhere(trainer_factory, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_state(evil)
    s = subprocess.run([sys.executable, "-m", "voxtrain.cli", "synth", "--checkpoint", str(evil), "--text", "Hi.",
                        "--out", str(tmp_path / "x.wav")], capture_output=True, text=True)
    assert s.returncode != 0 and "refused" in s.stderr
    t = trainer_factory("evil")
    r = t.run_to_end("--init-from", str(evil))
    assert r.returncode != 0 and "refused" in r.stderr
    # A malicious file planted as the newest checkpoint of a run is skipped, not executed.
    RunDir(t.run).checkpoints.mkdir(parents=True, exist_ok=True)
    evil_ckpt = RunDir(t.run).checkpoint(99)
    evil_ckpt.write_bytes(evil.read_bytes())
    r = t.run_to_end("--until-step", "2")
    assert r.returncode == 0 and "skipping corrupt checkpoint" in r.stderr
    assert not marker.exists()
    assert list_checkpoints(RunDir(t.run), verify=True)[-1].valid is False
    # The trainer reports what it skipped, so status and monitor know without opening files.
    assert any(e.get("event") == "checkpoint_corrupt" and e["step"] == 99 for e in t.metrics())
    assert list_checkpoints(RunDir(t.run))[-1].valid is False
