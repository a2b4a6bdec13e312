"""Reading audio files and trimming silence.

Every failure a corpus can throw at us (missing, corrupt, truncated, NaN-filled or empty
files) surfaces as one exception type, `AudioError`, whose `reason` is a short code that
prepare can count and report per clip instead of crashing a worker.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxtrain.config import AudioConfig
from voxtrain.errors import VoxtrainError

# soxr "HQ" is transparent for speech at a fraction of "VHQ"'s cost.
RESAMPLE_QUALITY = "HQ"

# Analysis grid of the silence trimmer; independent of the mel STFT on purpose so that
# changing mel settings does not move clip boundaries.
TRIM_FRAME = 1024
TRIM_HOP = 256
# Kept on each side of the detected speech so onsets/decays are not clipped.
TRIM_PAD_SECONDS = 0.02
# A peak frame RMS below this (about -100 dBFS) means there is nothing but silence.
SILENCE_FLOOR = 1e-5

# Writers that stream WAV (pipes) leave the data size as 0 or 0xFFFFFFFF; those values
# carry no claim about the length, so they cannot indicate truncation.
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)


# Audio file extensions a corpus may use, in the order tried when one id has several files,
# each with the libsndfile (major format, subtype) needed to decode it. Lossless first: with
# both a .wav and an .mp3 of a clip, the .wav is the better one.
AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", ""),
    ".flac": ("FLAC", ""),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
# The first libsndfile releases that decode a format, for the advice in a refusal.
_SINCE = {"MP3": "1.1.0", "OPUS": "1.0.29"}


def libsndfile_formats() -> dict[str, set[str]]:
    """What this process's libsndfile decodes: major format -> its subtypes."""
    return {fmt: set(sf.available_subtypes(fmt)) for fmt in sf.available_formats()}


def format_problem(ext: str, available: Mapping[str, Collection[str]] | None = None) -> str:
    """Why files ending in `ext` (".mp3") cannot be decoded here, or "" when they can.

    `available` is what libsndfile_formats() returns, by default that of this process: the
    answer depends on the libsndfile inside the installed soundfile wheel, not on voxtrain.
    """
    if ext not in AUDIO_FORMATS:
        return f"{ext or 'no extension'} is not an audio format voxtrain reads ({', '.join(AUDIO_FORMATS)})"
    fmt, subtype = AUDIO_FORMATS[ext]
    available = libsndfile_formats() if available is None else available
    if fmt in available and (not subtype or subtype in available[fmt]):
        return ""
    need = subtype if fmt == "OGG" else fmt
    since = f" (it needs libsndfile >= {_SINCE[need]})" if need in _SINCE else ""
    return (
        f"{ext} ({need}) cannot be decoded by the libsndfile {sf.__libsndfile_version__} of this "
        f"soundfile {sf.__version__}{since}"
    )


class AudioError(VoxtrainError):
    """A clip that cannot be used. `reason` is one of `unreadable_audio`,
    `nonfinite_samples`, `empty_audio`; `detail` is a human explanation."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keeps the two-argument form picklable across worker processes
        return (type(self), (self.reason, self.detail))


def _wav_truncation(path: Path) -> str | None:
    """Return a description if a RIFF/WAVE file holds fewer data bytes than its header
    declares, else None.

    libsndfile silently shortens such files to the bytes present, so the clip would be
    used with its tail missing; walking the chunks ourselves is the only way to notice.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not plain little-endian RIFF; leave it to libsndfile
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            body = pos + 8
            if chunk_id == b"data":
                present = size - body
                if chunk_size not in _UNKNOWN_DATA_SIZES and chunk_size > present:
                    return f"truncated: header declares {chunk_size} data bytes, file holds {present}"
                return None
            # Chunks are word aligned: an odd size is followed by one pad byte.
            pos = body + chunk_size + (chunk_size & 1)
    return None


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read a WAV/FLAC/OGG/MP3/... file as float32 mono at `sample_rate`.

    Channels are averaged; other rates are resampled with soxr. Raises `AudioError`.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError("unreadable_audio", f"{path}: no such file")
    try:
        truncated = _wav_truncation(path)
    except OSError as err:
        raise AudioError("unreadable_audio", f"{path}: {err}") from None
    if truncated:
        raise AudioError("unreadable_audio", f"{path}: {truncated}")
    try:
        with sf.SoundFile(path) as f:
            declared = f.frames
            src_rate = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        # Name the format the extension promised: "Format not recognised" alone does not say
        # that a file called .mp3 is not an MP3 (a renamed .m4a, a download error page).
        fmt = AUDIO_FORMATS.get(path.suffix.lower(), ("",))[0]
        what = f"not a decodable {fmt} file: " if fmt else ""
        raise AudioError("unreadable_audio", f"{path}: {what}{err}") from None
    if len(data) < declared:
        raise AudioError("unreadable_audio", f"{path}: truncated: read {len(data)} of {declared} frames")
    if data.size == 0:
        raise AudioError("empty_audio", f"{path}: no samples")
    # Checked before resampling: the filter would smear one NaN over its whole support
    # and hide where it came from.
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError("nonfinite_samples", f"{path}: {bad} NaN/Inf samples")
    wav = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    wav = np.ascontiguousarray(wav)  # soxr wants a contiguous buffer
    if src_rate != sample_rate:
        wav = soxr.resample(wav, src_rate, sample_rate, quality=RESAMPLE_QUALITY)
    return np.asarray(wav, dtype=np.float32)


def _frame_rms(wav: np.ndarray, frame: int = TRIM_FRAME, hop: int = TRIM_HOP) -> np.ndarray:
    """RMS of frames centred on sample i*hop (zero padded at the edges).

    Uses a cumulative sum of squares so long clips cost O(N) rather than O(N*frame).
    """
    x = np.asarray(wav, dtype=np.float64)
    half = frame // 2
    padded = np.concatenate([np.zeros(half), x * x, np.zeros(half)])
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    n_frames = 1 + len(x) // hop
    starts = np.arange(n_frames) * hop
    energy = csum[starts + frame] - csum[starts]
    # Cumulative-sum round-off can go slightly negative in silent stretches.
    return np.sqrt(np.maximum(energy, 0.0) / frame)


def is_silent(wav: np.ndarray, floor: float = SILENCE_FLOOR) -> bool:
    """True when no analysis frame of `wav` rises above `floor` RMS (or it is empty)."""
    if len(wav) == 0:
        return True
    return float(_frame_rms(wav).max()) <= floor


def trim_silence(wav: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Cut leading and trailing frames quieter than the loudest frame minus
    `cfg.trim_top_db` dB, keeping `TRIM_PAD_SECONDS` on each side.

    Returns an empty array for all-silent input; the caller decides what to do with it.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if len(wav) == 0:
        return wav[:0]
    rms = _frame_rms(wav)
    peak = float(rms.max())
    if peak <= SILENCE_FLOOR:
        return wav[:0]
    loud = np.flatnonzero(rms > peak * 10.0 ** (-cfg.trim_top_db / 20.0))
    pad = int(round(TRIM_PAD_SECONDS * cfg.sample_rate))
    # Frame i is centred on sample i*hop, so speech spans [first*hop, (last+1)*hop).
    start = max(0, int(loud[0]) * TRIM_HOP - pad)
    end = min(len(wav), (int(loud[-1]) + 1) * TRIM_HOP + pad)
    return wav[start:end].copy()
