"""`voxtrain train-vocoder`: the HiFi-GAN generator fine-tuned on the acoustic model's own
teacher-forced mels, run as real processes on the real micro corpus, store and checkpoint."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import (
    MICRO_CONFIG,
    OutputLines,
    _env,
    assert_same,
    events,
    records,
    run_cmd,
    vocoder_cmd,
    wait_until,
    without_time,
)


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
