"""Audio front end: loading, silence trimming and frame-level features."""

from voxtrain.audio.features import (
    MelSpectrogram,
    extract_features,
    frame_energy,
    interpolate_unvoiced,
    mel_basis,
    mel_spectrogram,
    num_frames,
    pitch_track,
)
from voxtrain.audio.io import AudioError, is_silent, load_audio, trim_silence

__all__ = [
    "AudioError",
    "MelSpectrogram",
    "extract_features",
    "frame_energy",
    "interpolate_unvoiced",
    "is_silent",
    "load_audio",
    "mel_basis",
    "mel_spectrogram",
    "num_frames",
    "pitch_track",
    "trim_silence",
]
