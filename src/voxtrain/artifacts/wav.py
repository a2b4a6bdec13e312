"""The WAV files voxtrain writes (synthesis, samples, tracker clips): 16-bit mono PCM at the
voice's rate, clipped to [-1, 1]. One writer: a whole waveform is one chunk of a stream.

No torch here: the onnxruntime voice writes through this without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_pcm16(audio: np.ndarray) -> bytes:
    """Little-endian 16-bit PCM, scaled as the WAV writer scales (x 32767, clipped to [-1, 1])."""
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class WavWriter:
    """A 16-bit WAV written as the chunks come (flushed after each); the header's length is
    set when the file is closed, so use it as a context manager."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        import soundfile as sf

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = sf.SoundFile(self.path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16")

    def __call__(self, chunk: np.ndarray) -> None:
        self._file.write(np.clip(chunk, -1.0, 1.0))
        self._file.flush()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> Path:
    """One whole waveform to `path` (parent folders made)."""
    with WavWriter(path, sample_rate) as write:
        write(wav)
    return Path(path)
