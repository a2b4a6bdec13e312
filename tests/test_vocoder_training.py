"""`voxtrain train-vocoder`: the HiFi-GAN generator fine-tuned on the acoustic model's own
teacher-forced mels, run as real processes on the real micro corpus, store and checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import MICRO_CONFIG, OutputLines, Trainer, _env, assert_same, wait_until, without_time, write_config

# Tiny segments, batch 2, few steps: a step is under a second on one core. Validation (the
# whole of both validation clips) is the slow part, so it runs only at step 0 and at the end.
VOCODER_SETTINGS = {
    "vocoder_training": {
        "max_steps": 6, "batch_size": 2, "segment_frames": 8, "log_every": 1, "validate_every": 1000,
        "save_every": 1000, "stft_resolutions": [[512, 50, 240], [1024, 120, 600]], "start": "ljspeech",
    },
    "training": {"trackers": []},
    "checkpoint": {"keep_last": 1, "disk_margin_mb": 0},
}


@pytest.fixture(scope="module")
def acoustic(features, tmp_path_factory) -> Path:
    """A micro acoustic model trained briefly: its mels are poor, which is what the vocoder must learn to render."""
    tmp = tmp_path_factory.mktemp("acoustic")
    cfg = write_config(tmp / "c.yaml", training={"max_steps": 60, "save_every": 60, "log_every": 60,
                                                 "grad_accum": 1, "batch_size": 4, "trackers": []})
    result = Trainer(features, tmp / "run", cfg).run_to_end("--yes")
    assert result.returncode == 0, result.stderr
    return tmp / "run" / "checkpoints" / "ckpt-step00000060.pt"


@pytest.fixture(scope="module")
def vocoder_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vocoder_config") / "vocoder.yaml"
    path.write_text(yaml.safe_dump(VOCODER_SETTINGS))
    return path


def vocoder_cmd(acoustic: Path, features: Path, corpus: Path, run: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "voxtrain.cli", "train-vocoder", "--checkpoint", str(acoustic),
            "--features", str(features), "--corpus", str(corpus), "--run", str(run), "--config", str(config),
            "--yes", *extra]


def run_cmd(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def records(run: Path, kind: str) -> dict[int, dict]:
    """The run's train or val records by step."""
    from voxtrain.artifacts.metrics_format import read_metrics

    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if r["type"] == kind}


def events(run: Path, name: str) -> list[dict]:
    from voxtrain.artifacts.metrics_format import read_metrics

    return [r for r in read_metrics(run / "metrics.jsonl") if r["type"] == "event" and r["event"] == name]


@pytest.fixture(scope="module")
def reference(acoustic, features, corpus_dir, vocoder_config, tmp_path_factory) -> Path:
    """An uninterrupted fine-tune to max_steps: the run the other tests are measured against."""
    run = tmp_path_factory.mktemp("vocoder") / "reference"
    result = run_cmd(vocoder_cmd(acoustic, features, corpus_dir, run, vocoder_config))
    assert result.returncode == 0, result.stderr
    return run


def mel_error(generator: torch.nn.Module, predicted: np.ndarray, real: np.ndarray) -> float:
    """Mean |log-mel| error of the generator's audio from a predicted mel against the real mel."""
    from voxtrain.audio import mel_spectrogram
    from voxtrain.config import AudioConfig

    with torch.inference_mode():
        wav = generator(torch.from_numpy(predicted).T[None])[0, 0].numpy()
    return float(np.mean(np.abs(mel_spectrogram(wav, AudioConfig()) - real)))


def test_fine_tune_lowers_the_mel_error_of_real_clips(reference: Path, features: Path) -> None:
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.vocoder import load_hifigan
    from voxtrain.vocoder_training.pairs import PairSet

    run = RunDir(reference)
    val, train = records(reference, "val"), records(reference, "train")
    assert sorted(val) == [0, 6] and sorted(train) == [1, 2, 3, 4, 5, 6]
    # The untouched vocoder's error is logged at step 0: the gain is there to read.
    assert val[6]["loss_mel"] < 0.8 * val[0]["loss_mel"], val
    assert run.vocoder_export.is_file()
    assert [(e["step"], e["val_mel_loss"]) for e in events(reference, "best_exported")] == [
        (0, val[0]["loss_mel"]), (6, val[6]["loss_mel"])]

    # Measured again here, outside the trainer, on the shortest validation clip.
    pairs, store = PairSet(run), FeatureStore(features)
    clip = min(pairs.split("val"), key=pairs.n_frames)
    predicted, audio = pairs.clip(clip)
    real = store.item(clip)["mel"].astype(np.float32)
    assert len(audio) == len(real) * 256  # the real audio lines up with the store's mel frame for frame
    before = mel_error(load_hifigan(), predicted, real)
    after = mel_error(load_hifigan(run.vocoder_export), predicted, real)
    assert after < 0.9 * before, (before, after)


def test_resumes_exactly_after_sigterm(reference, acoustic, features, corpus_dir, vocoder_config, tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir

    run = tmp_path / "interrupted"
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run, vocoder_config)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    output = OutputLines(proc.stdout)
    try:
        wait_until(lambda: max(records(run, "train"), default=0) >= 2, 240, "step 2", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, output.text
    finally:
        if proc.poll() is None:
            proc.kill()
    output.join(timeout=10)
    assert "SIGTERM received" in output.text
    saved = RunDir(run).checkpoint_files()
    assert len(saved) == 1, saved
    stopped_at = saved[0][0]
    assert 2 <= stopped_at < 6 and max(records(run, "train")) == stopped_at

    # A stage target first, then the rest: each invocation resumes where the last one saved.
    staged = run_cmd([*cmd, "--until-step", str(stopped_at + 1)])
    assert staged.returncode == 0, staged.stderr
    assert f"RESUMING the vocoder fine-tune from {saved[0][1]} (step {stopped_at})" in staged.stderr
    assert f"reached target step {stopped_at + 1}" in staged.stderr
    assert RunDir(run).checkpoint_files()[-1][0] == stopped_at + 1
    resumed = run_cmd(cmd)
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = records(run, "train"), records(reference, "train")
    assert sorted(ours) == sorted(theirs)
    # Bitwise: the same segments, weights, optimizer moments and one-thread CPU math.
    keys = ("loss_total", "loss_mel", "loss_sc", "loss_mag", "grad_norm", "epoch")
    assert [[ours[s][k] for k in keys] for s in sorted(ours)] == [[theirs[s][k] for k in keys] for s in sorted(theirs)]
    assert records(run, "val")[6]["loss_mel"] == records(reference, "val")[6]["loss_mel"]
    state = torch.load(RunDir(run).checkpoint_files()[-1][1], weights_only=True)
    assert (state["step"], state["acoustic_checkpoint"], state["corpus"]) == (6, str(acoustic), str(corpus_dir))
    # Weights, optimizer moments, RNGs and data position: bitwise those of the unbroken run.
    want = torch.load(RunDir(reference).checkpoint_files()[-1][1], weights_only=True)
    assert_same(without_time(want), without_time(state))


def test_the_voice_export_speaks_with_its_fine_tuned_generator(reference: Path, acoustic: Path,
                                                               tmp_path: Path) -> None:
    """RUN/checkpoints/best.safetensors is the whole voice: `synth` on it alone uses the tuned
    generator, exactly as naming it with --vocoder-path does, and not the bundled one."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer

    run, text = RunDir(reference), "A short test."
    out = tmp_path / "hello.wav"
    result = run_cmd([sys.executable, "-m", "voxtrain.cli", "synth", "--checkpoint", str(run.best_export),
                      "--text", text, "--out", str(out), "--precision", "fp32"])
    assert result.returncode == 0, result.stderr
    voice, rate = sf.read(out, dtype="float32")
    assert rate == 22050 and len(voice) > 0.2 * rate

    model = load_acoustic_model(acoustic)
    tuned = Synthesizer(model, vocoder_path=run.vocoder_export, precision="fp32").waveforms([text])[0]
    bundled = Synthesizer(model, precision="fp32").waveforms([text])[0]
    # The WAV holds 16-bit samples: equal within a quantization step, far from the bundled vocoder's.
    assert np.abs(voice - tuned).max() < 2 / 32768
    assert np.abs(voice - bundled).max() > 100 / 32768
    sidecar = json.loads(run.best_export_sidecar.read_text(encoding="utf-8"))
    assert (sidecar["vocoder"], sidecar["acoustic_checkpoint"]) == (run.vocoder_export.name, acoustic.name)


def test_a_corpus_that_lacks_a_clip_is_refused_by_name(acoustic, features, corpus_dir, vocoder_config,
                                                       tmp_path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    manifest = [json.loads(line) for line in (features / "manifest.jsonl").read_text().splitlines() if line]
    gone = manifest[0]["id"]
    (corpus / "wavs" / f"{gone}.wav").unlink()
    result = run_cmd(vocoder_cmd(acoustic, features, corpus, tmp_path / "run", vocoder_config))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    # Refused by the pre-flight, before the run directory is touched; its closing rows are plain lines.
    assert "error: pre-flight failed" in result.stderr and not (tmp_path / "run").exists()
    assert f"  inputs: 1 clips of the feature store {features} have no usable audio in the corpus {corpus}" \
        in result.stderr
    assert f"{gone} (" in result.stderr and "--corpus must be the folder `voxtrain prepare` made the store from" \
        in result.stderr


def test_a_replaced_clip_and_mel_settings_that_do_not_fit_are_refused(acoustic, features, corpus_dir,
                                                                      vocoder_config, tmp_path) -> None:
    from voxtrain.config import config_from_dict, load_config
    from voxtrain.data import prepare_corpus
    from voxtrain.vocoder_training import VocoderTrainingError, train_vocoder

    # One step at most, so that a check that lets the input through fails the test quickly.
    cfg = load_config(vocoder_config, ["vocoder_training.max_steps=1"])
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    clip = json.loads((features / "manifest.jsonl").read_text().splitlines()[1])["id"]
    wav, rate = sf.read(corpus / "wavs" / f"{clip}.wav", dtype="float32")
    sf.write(corpus / "wavs" / f"{clip}.wav", wav[: len(wav) * 2 // 3], rate)  # edited after prepare
    with pytest.raises(VocoderTrainingError, match=f"clip {clip}: .* the store and the corpus do not match"):
        train_vocoder(acoustic, features, corpus, tmp_path / "run", cfg)

    state = torch.load(acoustic, weights_only=True)
    state["config"]["audio"]["hop_length"] = 200
    other = tmp_path / "other_hop.pt"
    torch.save(state, other)
    with pytest.raises(VocoderTrainingError, match=r"different mel settings:\n  audio.hop_length: 256 in the "
                                                   r"store, 200 in the checkpoint"):
        train_vocoder(other, features, corpus_dir, tmp_path / "run2", cfg)

    # A store and a model that agree, on mels the HiFi-GAN cannot render.
    hop200 = json.loads(json.dumps(MICRO_CONFIG))
    hop200["audio"] = {"hop_length": 200}
    prepare_corpus(corpus_dir, tmp_path / "hop200", config_from_dict(hop200), workers=1, progress=False)
    with pytest.raises(VocoderTrainingError, match=r"holds mels it cannot render: .*audio.hop_length=200 \(needs "
                                                   r"256\)"):
        train_vocoder(other, tmp_path / "hop200", corpus_dir, tmp_path / "run3", cfg)


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


def test_the_starting_generator_is_chosen_by_ear(acoustic, features, corpus_dir, vocoder_config, tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir

    run = RunDir(tmp_path / "auto")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, "--set", "vocoder_training.start=auto",
                      "--set", "vocoder_training.start_clips=2", "--until-step", "1")
    result = run_cmd(cmd)
    assert result.returncode == 0, result.stderr
    info = json.loads(run.run_info.read_text())["start_generator"]
    heard = {name: s["dnsmos_ovrl"] for name, s in info["scores"].items()}
    assert set(heard) == {"ljspeech", "universal"} and info["name"] == max(heard, key=heard.get), info
    assert "starting vocoder" in result.stderr  # the pre-flight row says which, and why
    # The run uses what pre-flight chose (config.yaml records it) and its checkpoint says so.
    assert yaml.safe_load(run.config.read_text())["vocoder_training"]["start"] == info["name"]
    assert torch.load(run.checkpoint(1), weights_only=True)["start_generator"] == info["name"]
