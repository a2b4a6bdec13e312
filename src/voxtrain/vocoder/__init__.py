"""Mel-to-waveform vocoders: pretrained HiFi-GAN and a weight-free Griffin-Lim fallback.

`load_vocoder(...)` returns a callable `(B, n_mels, T) or (n_mels, T) log-mel -> (B, T * hop)`
waveform in [-1, 1], run under inference mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from voxtrain.config import AudioConfig
from voxtrain.vocoder.griffin_lim import GriffinLimVocoder
from voxtrain.vocoder.hifigan import (
    HifiGanGenerator,
    HifiGanParams,
    VocoderError,
    bundled_hifigan_path,
    load_hifigan,
)

VOCODERS = ("hifigan", "griffin-lim")

# The settings the bundled LJSpeech generator was trained on; mels made any other way
# vocode into noise or pitch-shifted speech, so they are refused up front.
_HIFIGAN_MEL_SETTINGS = {
    "sample_rate": 22050,
    "n_fft": 1024,
    "win_length": 1024,
    "hop_length": 256,
    "n_mels": 80,
    "fmin": 0.0,
    "fmax": 8000.0,
}


class HifiGanVocoder:
    """Pretrained HiFi-GAN generator behind the common vocoder interface."""

    name = "hifigan"

    def __init__(self, generator: HifiGanGenerator, audio: AudioConfig, device: torch.device) -> None:
        self.generator = generator
        self.audio = audio
        self.device = device

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    @property
    def hop_length(self) -> int:
        return self.generator.params.hop_length

    def __call__(self, mel: Tensor) -> Tensor:
        n_mels = self.generator.params.n_mels
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        if mel.dim() != 3 or mel.shape[1] != n_mels:
            raise ValueError(f"expected a mel of shape (B, {n_mels}, T), got {tuple(mel.shape)}")
        with torch.inference_mode():
            wav = self.generator(mel.to(self.device, torch.float32))
        return wav.squeeze(1)


def _check_hifigan_audio(audio: AudioConfig) -> None:
    wrong = {
        key: (getattr(audio, key), want)
        for key, want in _HIFIGAN_MEL_SETTINGS.items()
        if getattr(audio, key) != want
    }
    if wrong:
        listed = ", ".join(f"audio.{k}={got} (needs {want})" for k, (got, want) in wrong.items())
        raise VocoderError(
            "the HiFi-GAN vocoder was trained on 22050 Hz / n_fft = win 1024 / hop 256 / 80 mels / "
            f"0-8000 Hz mels and cannot render these: {listed}. "
            "Use those audio settings, or name='griffin-lim'."
        )


def load_vocoder(
    name: str = "hifigan",
    path: str | Path | None = None,
    audio: AudioConfig | None = None,
    device: str | torch.device = "cpu",
) -> HifiGanVocoder | GriffinLimVocoder:
    """Build a vocoder by name.

    `path` is a jik876-format HiFi-GAN generator checkpoint (a `config.json` beside it sets
    V2/V3 hyperparameters); None means the bundled LJSpeech V1 weights. Griffin-Lim ignores it.
    """
    audio = audio or AudioConfig()
    device = torch.device(device)
    key = name.strip().lower().replace("_", "-")
    if key == "hifigan":
        _check_hifigan_audio(audio)
        generator = load_hifigan(path, device)
        if generator.params.hop_length != audio.hop_length or generator.params.n_mels != audio.n_mels:
            raise VocoderError(
                f"HiFi-GAN checkpoint upsamples by {generator.params.hop_length} from "
                f"{generator.params.n_mels} mels, but audio uses hop {audio.hop_length} "
                f"and {audio.n_mels} mels"
            )
        return HifiGanVocoder(generator, audio, device)
    if key in ("griffin-lim", "griffinlim"):
        return GriffinLimVocoder(audio, device=device)
    raise ValueError(f"unknown vocoder {name!r}; choose one of: {', '.join(VOCODERS)}")


__all__ = [
    "VOCODERS",
    "GriffinLimVocoder",
    "HifiGanGenerator",
    "HifiGanParams",
    "HifiGanVocoder",
    "VocoderError",
    "bundled_hifigan_path",
    "load_hifigan",
    "load_vocoder",
]
