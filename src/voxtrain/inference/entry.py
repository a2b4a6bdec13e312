"""`voxtrain synth` and `voxtrain.synthesize`: a synthesis plan spoken by either voice, whole
(one WAV per text) or streamed (WAVs that grow chunk by chunk, or PCM on stdout).

engine "torch" is torch_voice.Synthesizer on a checkpoint or .safetensors export; "onnx" is
onnx_voice.OnnxVoice on an `export --onnx` voice, imported alone so that torch never loads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from voxtrain.inference.errors import SynthError
from voxtrain.inference.plan import FOREIGN_TEXT_DEFAULT, plan_synthesis
from voxtrain.inference.streaming import StreamSettings, StreamStats, stream_texts

ENGINES = ("torch", "onnx")


class Voice(Protocol):
    """What both voices offer: torch_voice.Synthesizer and onnx_voice.OnnxVoice."""

    @property
    def sample_rate(self) -> int: ...

    def waveforms(self, texts: list[str], pace: float = 1.0, allow_unknown: bool = False) -> list[np.ndarray]: ...

    def stream(self, text: str, pace: float = 1.0, allow_unknown: bool = False,
               settings: StreamSettings | None = None) -> Iterator[np.ndarray]: ...

    def require_streaming(self) -> None: ...

    def write(self, wav: np.ndarray, path: str | Path) -> Path: ...


def open_voice(checkpoint: str | Path, engine: str = "torch", vocoder: str = "hifigan",
               vocoder_path: str | Path | None = None, device: str = "cpu", precision: str = "auto",
               foreign_text: str = FOREIGN_TEXT_DEFAULT, threads: int | None = None) -> Voice:
    """The voice of `checkpoint` on `engine`. onnx: fp32 with its own HiFi-GAN, on the CPU
    (`threads` onnxruntime threads); torch: the other options."""
    if engine == "onnx":
        if (vocoder, vocoder_path, device) != ("hifigan", None, "cpu") or precision not in ("auto", "fp32"):
            raise SynthError("the onnx engine runs its own HiFi-GAN in fp32 on the CPU: no vocoder, device "
                             "or precision to choose")
        from voxtrain.inference.onnx_voice import OnnxVoice

        return OnnxVoice.load(checkpoint, threads, foreign_text)
    if engine != "torch":
        raise SynthError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    from voxtrain.inference.torch_voice import Synthesizer

    return Synthesizer.load(checkpoint, vocoder, vocoder_path, device, precision, foreign_text)


def synthesize(
    text: str | list[str],
    checkpoint: str | Path,
    out: str | Path,
    vocoder: str = "hifigan",
    vocoder_path: str | Path | None = None,
    pace: float = 1.0,
    device: str = "cpu",
    precision: str = "auto",
    foreign_text: str = FOREIGN_TEXT_DEFAULT,
    engine: str = "torch",
    threads: int | None = None,
) -> list[Path]:
    """Synthesize one text to `out` (a .wav path) or several texts into `out/` (a directory).
    foreign_text: spell, drop or refuse letters outside the voice's language."""
    plan = plan_synthesis(text, out, foreign_text)
    voice = open_voice(checkpoint, engine, vocoder, vocoder_path, device, precision, plan.foreign_text, threads)
    for path, wav in zip(plan.paths, voice.waveforms(plan.texts, pace), strict=True):
        voice.write(wav, path)
    return plan.paths


def synthesize_stream(
    text: str | list[str],
    checkpoint: str | Path,
    out: str | Path,
    vocoder_path: str | Path | None = None,
    pace: float = 1.0,
    device: str = "cpu",
    precision: str = "auto",
    foreign_text: str = FOREIGN_TEXT_DEFAULT,
    settings: StreamSettings | None = None,
    engine: str = "torch",
    threads: int | None = None,
) -> list[tuple[str, StreamStats]]:
    """`voxtrain synth --stream`: like synthesize, streamed with HiFi-GAN (out "-" is raw 16-bit
    PCM on stdout; see streaming.stream_texts). Returns (where, stats) per text."""
    plan = plan_synthesis(text, out, foreign_text, stdout_allowed=True)
    voice = open_voice(checkpoint, engine, "hifigan", vocoder_path, device, precision, plan.foreign_text, threads)
    voice.require_streaming()  # before any file: a voice that cannot stream leaves none
    return stream_texts(voice, plan.texts, plan.paths, pace, settings)
