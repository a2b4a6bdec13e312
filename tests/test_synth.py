"""Synthesis end to end: a briefly trained micro model speaks text to a valid WAV."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from voxtrain.inference.entry import synthesize
from voxtrain.inference.errors import SynthError
from voxtrain.inference.loader import load_acoustic_model
from voxtrain.inference.torch_voice import Synthesizer
from voxtrain.precision import resolve_precision

SENTENCE = "The quick brown fox jumps over the lazy dog."


def _correlation(model_mel: torch.Tensor, wav: np.ndarray, audio) -> float:
    """Pearson correlation of the model's (n_mels, T) log-mel with the log-mel of `wav`, frame by frame."""
    from voxtrain.audio import mel_spectrogram

    heard = mel_spectrogram(wav.astype(np.float32), audio).T  # (n_mels, T')
    assert abs(heard.shape[1] - model_mel.shape[1]) <= 2, (heard.shape, model_mel.shape)
    n = min(heard.shape[1], model_mel.shape[1])
    return float(np.corrcoef(model_mel[:, :n].numpy().ravel(), heard[:, :n].ravel())[0, 1])


def test_synth_cli_writes_wav_of_plausible_duration(trained, tmp_path):
    out = tmp_path / "fox.wav"
    r = subprocess.run([sys.executable, "-m", "voxtrain.cli", "synth", "--checkpoint", str(trained), "--text",
                        SENTENCE, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wav, sr = sf.read(out)
    assert sr == 22050 and wav.ndim == 1
    # espeak speaks this sentence in ~2.5 s; a model that learned the corpus' durations lands near it.
    assert 1.0 < len(wav) / sr < 6.0, len(wav) / sr
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0.01
    # The audio is the vocoded mel of the model, not just any sound of that length: its mel follows the
    # model's (measured: r = 0.84 with the bundled HiFi-GAN) where white noise as loud does not (-0.07).
    acoustic = load_acoustic_model(trained)
    model_mel = Synthesizer(acoustic, "none", precision="fp32").mels([SENTENCE])[0]
    assert _correlation(model_mel, wav, acoustic.config.audio) > 0.6
    noise = np.random.default_rng(0).standard_normal(len(wav)) * wav.std()
    assert _correlation(model_mel, noise, acoustic.config.audio) < 0.2


def test_pace_scales_duration_and_many_texts_go_to_a_directory(trained, tmp_path):
    synth = Synthesizer(load_acoustic_model(trained), "griffin-lim")
    normal, fast = (synth.mels([SENTENCE], pace=p)[0].shape[1] for p in (1.0, 2.0))
    assert abs(fast - normal / 2) <= 0.1 * normal
    paths = synthesize(["One.", "Two words."], trained, tmp_path / "many", vocoder="griffin-lim")
    assert [p.name for p in paths] == ["001.wav", "002.wav"] and all(p.is_file() for p in paths)


def _cpu_flags() -> set[str]:
    """The x86 feature flags of this CPU from /proc/cpuinfo (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def test_precision_is_resolved_and_checked(trained):
    acoustic = load_acoustic_model(trained)
    assert Synthesizer(acoustic, "none", precision="fp32").precision == "fp32"
    # auto: what this device really resolves to (bf16 where it computes bf16 natively, else fp32).
    native = resolve_precision("auto", torch.device("cpu"))
    assert Synthesizer(acoustic, "none").precision == native
    flags = _cpu_flags()
    if flags:  # x86 Linux: the CPU's own word on native bf16
        assert native == ("bf16" if flags & {"avx512_bf16", "amx_bf16"} else "fp32"), sorted(flags)
    with pytest.raises(SynthError, match="precision must be one of auto, fp32, bf16, fp16"):
        Synthesizer(acoustic, "none", precision="int8")
    # Both precisions give the same utterance length and nearly the same mel.
    fp32 = Synthesizer(acoustic, "none", precision="fp32").mels([SENTENCE])[0]
    bf16 = Synthesizer(acoustic, "none", precision="bf16").mels([SENTENCE])[0]
    assert fp32.dtype == bf16.dtype == torch.float32
    assert abs(fp32.shape[1] - bf16.shape[1]) <= 0.05 * fp32.shape[1]
    frames = min(fp32.shape[1], bf16.shape[1])
    assert (fp32[:, :frames] - bf16[:, :frames]).abs().mean() < 0.25


def test_weights_stored_for_autocast_give_the_same_mel(trained):
    """synthesize() stores the matmul weights in bf16 once instead of autocast casting them
    at every call: the numbers must not change, and the model must still run under autocast."""
    from voxtrain.precision import autocast, store_weights_for_autocast

    cast_each_call, stored = (load_acoustic_model(trained).model for _ in range(2))
    store_weights_for_autocast(stored, "bf16")
    assert stored.decoder.blocks[0].ffn.conv1.conv.weight.dtype == torch.bfloat16
    assert stored.decoder.blocks[0].norm1.weight.dtype == torch.float32
    assert stored.embedding.weight.dtype == torch.float32
    ids = torch.tensor([list(range(3, 40))])
    with autocast("bf16", torch.device("cpu")):
        want, got = (m.infer(ids) for m in (cast_each_call, stored))
    assert torch.equal(got["durations"], want["durations"])
    assert torch.equal(got["mel"], want["mel"])
    store_weights_for_autocast(cast_each_call, "fp32")  # fp32: nothing to store
    assert cast_each_call.decoder.blocks[0].attn.qkv.weight.dtype == torch.float32


def test_unknown_symbols_are_reported_not_dropped(trained):
    from voxtrain.text import SymbolTable

    acoustic = load_acoustic_model(trained)
    table = acoustic.symbols.to_dict()
    # A model whose alphabet lacks /ð/ (e.g. trained on another language) must say so.
    acoustic.symbols = SymbolTable.from_dict(dict(table, symbols=[s for s in table["symbols"] if s != "ð"]))
    synth = Synthesizer(acoustic, "none")
    with pytest.raises(SynthError, match="never seen the symbol.*ð"):
        synth.phoneme_ids(["The other one."])
    assert synth.phoneme_ids(["The other one."], allow_unknown=True)[0].count(acoustic.symbols.unk_id) == 2
    with pytest.raises(SynthError, match="nothing to speak"):
        synth.phoneme_ids([""])
