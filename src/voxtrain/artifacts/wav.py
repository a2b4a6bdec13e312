"""The WAV files synthesis writes: 16-bit PCM at the voice's rate, clipped to [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> Path:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path
