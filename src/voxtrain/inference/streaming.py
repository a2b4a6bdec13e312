"""Streaming synthesis, shared by the PyTorch voice (torch_voice.Synthesizer.stream) and the
onnxruntime voice (onnx_voice.OnnxVoice.stream): the acoustic model runs once on the whole
utterance, then HiFi-GAN runs over consecutive mel windows and each chunk of audio is handed out
as soon as it is ready.

HiFi-GAN is convolutions only, so a sample depends on the mel frames within a fixed radius of
it and on nothing further away (`context_frames`). Each window is vocoded with that many frames
of context either side, and only the samples of its own frames are kept: the stream, joined,
is the unstreamed waveform up to float rounding (STREAM_MAX_ABS), so joins cannot click.

The first chunk is small, so the first audio comes early; later chunks grow, so the context
frames, vocoded twice, cost less of the total. No torch here: the onnx voice streams without it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from voxtrain.artifacts.wav import WavWriter, to_pcm16
from voxtrain.inference.errors import StreamError

# Streamed vs unstreamed audio, both fp32, any chunking: max |diff| over samples. The windows
# see exactly the frames the whole mel gives those samples, so what is left is float rounding
# of convolutions run over other lengths; measured 1e-5 on the demo voice.
STREAM_MAX_ABS = 1e-4
# HifiGanGenerator's conv_pre and conv_post are kernel-7 convolutions: 3 samples either side.
_EDGE_CONV_RADIUS = 3


@dataclass(frozen=True)
class StreamSettings:
    """How the mel is cut into chunks, in mel frames (one frame is hop_length samples).

    first_frames: the first chunk; it sets the time to first audio (its vocoder call covers
    first_frames + context_frames). Each later chunk is `growth` times the one before, up to
    max_frames; a remainder shorter than the context joins the chunk before it.
    """

    first_frames: int = 8
    growth: float = 2.0
    max_frames: int = 256

    def __post_init__(self) -> None:
        if self.first_frames < 1 or self.max_frames < self.first_frames:
            raise StreamError(f"stream chunks need 1 <= first_frames <= max_frames, got first_frames "
                              f"{self.first_frames}, max_frames {self.max_frames}")
        if self.growth < 1:
            raise StreamError(f"stream chunk growth must be >= 1, got {self.growth}")


class VocoderShape(Protocol):
    """What context_frames reads: HiFi-GAN hyperparameters (vocoder.HifiGanParams has them)."""

    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]


def context_frames(params: VocoderShape) -> int:
    """HiFi-GAN's receptive radius in mel frames, rounded up: a sample changes with the frames
    this close to its own frame and with no others.

    Each layer's reach beyond its input's span, in samples of its output, is divided by that
    output's upsampling: the edge convolutions reach 3, a transposed convolution of kernel K and
    rate u (K - u) / 2, and a residual stack (the widest of the parallel ones) the sum of its
    convolutions' half-widths. HiFi-GAN V1: 12.73 -> 13 frames.
    """
    reach = float(_EDGE_CONV_RADIUS)
    upsampled = 1
    for rate, kernel in zip(params.upsample_rates, params.upsample_kernel_sizes, strict=True):
        upsampled *= rate
        stacks = []
        for k, dilations in zip(params.resblock_kernel_sizes, params.resblock_dilation_sizes, strict=True):
            half = (k - 1) // 2
            # resblock 1: a dilated then a plain conv per dilation; resblock 2: the dilated one only.
            stacks.append(sum(half * d + (half if params.resblock == "1" else 0) for d in dilations))
        reach += ((kernel - rate) // 2 + max(stacks)) / upsampled
    reach += _EDGE_CONV_RADIUS / upsampled
    return math.ceil(reach)


def chunk_bounds(frames: int, settings: StreamSettings, context: int = 0) -> list[tuple[int, int]]:
    """The [start, end) frames of each chunk of a `frames`-long mel."""
    bounds: list[tuple[int, int]] = []
    start, size = 0, float(settings.first_frames)
    while start < frames:
        end = min(frames, start + int(size))
        if frames - end < max(context, 1):
            end = frames  # a sliver would cost a whole window of context for a few samples
        bounds.append((start, end))
        start, size = end, min(size * settings.growth, settings.max_frames)
    return bounds


def stream_windows(
    mel: Any, vocode: Callable[[Any], np.ndarray], context: int, hop: int, settings: StreamSettings | None = None
) -> Iterator[np.ndarray]:
    """Audio chunks of `mel` (an (n_mels, frames) array or tensor), one per chunk_bounds entry.

    vocode(window) must return the window's audio, 1-D float, hop samples per frame.
    """
    settings = settings or StreamSettings()
    frames = int(mel.shape[-1])
    for start, end in chunk_bounds(frames, settings, context):
        lo, hi = max(0, start - context), min(frames, end + context)
        audio = np.asarray(vocode(mel[..., lo:hi]), dtype=np.float32).reshape(-1)
        if len(audio) != (hi - lo) * hop:
            raise StreamError(f"the vocoder gave {len(audio)} samples for {hi - lo} frames, "
                              f"expected {hop} per frame")
        yield audio[(start - lo) * hop : (end - lo) * hop]


@dataclass
class StreamStats:
    """What one streamed text took: first_audio_s from the request to the first chunk out."""

    chunks: int = 0
    samples: int = 0
    first_audio_s: float | None = None
    total_s: float = 0.0

    def describe(self, where: str) -> str:
        name = "stdout (16-bit mono PCM)" if where == "-" else where
        first = "no audio" if self.first_audio_s is None else f"first audio after {self.first_audio_s * 1000:.0f} ms"
        return (f"streamed {self.chunks} chunks to {name}: {first}, "
                f"all {self.samples} samples after {self.total_s:.2f} s")


def pump(chunks: Iterator[np.ndarray], write: Callable[[np.ndarray], None], started: float) -> StreamStats:
    """Hand each chunk to `write` as it comes; `started` is time.perf_counter() at the request."""
    stats = StreamStats()
    for chunk in chunks:
        write(chunk)
        if stats.first_audio_s is None:
            stats.first_audio_s = time.perf_counter() - started
        stats.chunks += 1
        stats.samples += len(chunk)
    stats.total_s = time.perf_counter() - started
    return stats


class PcmWriter:
    """Raw 16-bit mono PCM to a byte stream (`--out -`: stdout), flushed after every chunk."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer

    def __call__(self, chunk: np.ndarray) -> None:
        self.stream.write(to_pcm16(chunk))
        self.stream.flush()


class Streamer(Protocol):
    """What stream_texts drives: torch_voice.Synthesizer and onnx_voice.OnnxVoice."""

    @property
    def sample_rate(self) -> int: ...

    def stream(self, text: str, pace: float = 1.0, allow_unknown: bool = False,
               settings: StreamSettings | None = None) -> Iterator[np.ndarray]: ...


def stream_texts(engine: Streamer, texts: list[str], paths: list[Path] | None, pace: float = 1.0,
                 settings: StreamSettings | None = None) -> list[tuple[str, StreamStats]]:
    """`voxtrain synth --stream`: each text streamed as its chunks come, to its WAV in `paths`
    (files that grow chunk by chunk) or, for None, as raw 16-bit mono PCM on stdout, every
    text one after the other (pipe it to a player). Returns (where, stats) per text, "-" for stdout.
    """
    if paths is None:
        write = PcmWriter()
        return [("-", pump(engine.stream(text, pace, settings=settings), write, time.perf_counter()))
                for text in texts]
    if len(paths) != len(texts):
        raise StreamError(f"{len(texts)} texts but {len(paths)} output files")
    done = []
    for path, text in zip(paths, texts, strict=True):
        started = time.perf_counter()
        chunks = engine.stream(text, pace, settings=settings)  # before the file: a refused text leaves none
        with WavWriter(path, engine.sample_rate) as write:
            done.append((str(path), pump(chunks, write, started)))
    return done
