"""Speaker similarity: cosine between GE2E speaker embeddings (Wan et al. 2018) of a clip and
the centroid of reference clips, with the pretrained encoder that the `resemblyzer` wheel ships
(resemblyzer/pretrained.pt: a 3-layer LSTM 40 -> 256, a linear 256 -> 256, ReLU, L2 norm).

We load those weights into our own small network instead of importing resemblyzer: importing
it imports webrtcvad, which needs `pkg_resources`, gone from setuptools >= 80, so the import
fails in a current environment (and would pull librosa too). The preprocessing the encoder was
trained with is reproduced here:

- 16 kHz mono; the volume raised (never lowered) to -30 dBFS;
- long silences shortened. resemblyzer does that with webrtcvad's voice-activity flags over
  30 ms windows (smoothed over 8 windows, then dilated by 3 windows each side); we flag a
  window as voiced when its RMS is within 40 dB of the loudest window, then smooth and dilate
  the same way. An energy gate is cruder than a VAD on noisy speech, but for synthesis and
  studio corpora both just cut the pauses;
- power (not log) mel spectrogram, 40 Slaney bands, 25 ms Hann window (400), 10 ms hop (160),
  zero-padded centred frames;
- the utterance cut into 160-frame (1.6 s) partial windows, 1.3 per second; a last window
  covering under 75 % of real audio is dropped unless it is the only one; the partials'
  embeddings averaged and L2-normalised.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from voxtrain.audio import mel_basis
from voxtrain.listening.common import SCORER_RATE, package_file, require, to_scorer_rate

WEIGHTS_FILE = "pretrained.pt"
N_MELS, N_FFT, HOP = 40, 400, 160
HIDDEN, EMBEDDING, LAYERS = 256, 256, 3
PARTIAL_FRAMES = 160
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
GATE_WINDOW = 480  # 30 ms
GATE_TOP_DB = 40.0
GATE_SMOOTHING = 8
GATE_DILATION = 3  # windows each side


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise quiet audio to target_dbfs RMS; loud audio is left alone."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms <= 0.0:
        return wav
    gain_db = target_dbfs - 20.0 * np.log10(rms)
    return wav * np.float32(10.0 ** (gain_db / 20.0)) if gain_db > 0 else wav


def trim_pauses(wav: np.ndarray) -> np.ndarray:
    """Drop the 30 ms windows far from any voiced one (the energy-gated stand-in for
    resemblyzer's webrtcvad trim; see the module docstring)."""
    n = len(wav) // GATE_WINDOW
    if n == 0:
        return wav
    frames = wav[: n * GATE_WINDOW].reshape(n, GATE_WINDOW).astype(np.float64)
    level = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    voiced = (level > level.max() - GATE_TOP_DB).astype(np.float64)
    # Centred moving average over GATE_SMOOTHING windows, then a majority vote.
    padded = np.concatenate([np.zeros((GATE_SMOOTHING - 1) // 2), voiced, np.zeros(GATE_SMOOTHING // 2)])
    smooth = np.convolve(padded, np.ones(GATE_SMOOTHING) / GATE_SMOOTHING, mode="valid")
    keep = np.round(smooth) > 0
    # Dilation: a window is kept when a voiced one is within GATE_DILATION windows. ("full" and a
    # slice, not mode="same", whose output is as long as the kernel when the clip is shorter.)
    keep = np.convolve(keep, np.ones(2 * GATE_DILATION + 1), mode="full")[GATE_DILATION : GATE_DILATION + n] > 0
    if not keep.any():
        return wav
    return frames[keep].reshape(-1).astype(np.float32)


def power_mel(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) power mel spectrogram, frames centred on every HOP-th sample."""
    padded = np.pad(wav.astype(np.float64), (N_FFT // 2, N_FFT // 2))
    n_frames = 1 + len(wav) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = np.hanning(N_FFT + 1)[:-1]  # periodic Hann
    spectrum = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2
    return (spectrum @ _mel_filters().T).astype(np.float32)


_FILTERS: np.ndarray | None = None


def _mel_filters() -> np.ndarray:
    global _FILTERS
    if _FILTERS is None:
        _FILTERS = mel_basis(SCORER_RATE, N_FFT, N_MELS, 0.0, SCORER_RATE / 2).astype(np.float64)
    return _FILTERS


def partial_starts(n_samples: int) -> list[int]:
    """First mel frame of each 1.6 s partial window of an utterance of n_samples."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round(SCORER_RATE / PARTIALS_PER_SECOND / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def _unit(x: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 0 else x


class SpeakerEncoder:
    """The GE2E network with resemblyzer's pretrained weights; embeds 16 kHz clips."""

    def __init__(self) -> None:
        torch = require("torch", "speaker similarity")
        path = package_file("resemblyzer", WEIGHTS_FILE, "speaker similarity")
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        self.lstm = torch.nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = torch.nn.Linear(HIDDEN, EMBEDDING)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self._torch = torch

    def partials(self, audio: np.ndarray) -> np.ndarray:
        """(n_partials, 160, 40) mel windows of one mono 16 kHz clip, preprocessed."""
        wav = trim_pauses(normalize_volume(np.asarray(audio, dtype=np.float32)))
        starts = partial_starts(len(wav))
        end = (starts[-1] + PARTIAL_FRAMES) * HOP
        if end >= len(wav):
            wav = np.pad(wav, (0, end - len(wav)))
        mel = power_mel(wav)
        return np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])

    def embed_many(self, clips: list[np.ndarray]) -> np.ndarray:
        """(n_clips, 256) unit-length embeddings of mono 16 kHz clips.

        Every partial window of every clip goes through the LSTM in one batch, on one thread:
        the network is small, and an LSTM's 480 sequential small steps, each a parallel region,
        cost more in thread hand-offs than they gain, far more so on a CPU shared with training.
        """
        if not clips:
            return np.zeros((0, EMBEDDING))
        windows = [self.partials(c) for c in clips]
        torch = self._torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                _, (hidden, _) = self.lstm(torch.from_numpy(np.concatenate(windows)))
                embeds = torch.relu(self.linear(hidden[-1]))
                embeds = (embeds / embeds.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy().astype(np.float64)
        finally:
            torch.set_num_threads(threads)
        bounds = np.cumsum([0] + [len(w) for w in windows])
        return np.stack([_unit(embeds[a:b].mean(axis=0)) for a, b in zip(bounds[:-1], bounds[1:])])

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """Unit-length (256,) embedding of one mono 16 kHz clip."""
        return self.embed_many([audio])[0]


_ENCODER: SpeakerEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def shared_encoder() -> SpeakerEncoder:
    """One encoder per process: the reference and every scorer use the same weights."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = SpeakerEncoder()
        return _ENCODER


@dataclass
class SpeakerReference:
    """The voice a clip should sound like: its reference clips' embeddings and their centroid."""

    embeddings: np.ndarray  # (n_clips, 256), each unit length
    source: str = ""  # what the clips were, for reports: e.g. "real validation clips"
    centroid: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.embeddings = np.atleast_2d(np.asarray(self.embeddings, dtype=np.float64))
        if self.embeddings.shape[0] == 0:
            raise ValueError("a speaker reference needs at least one clip")
        self.centroid = _unit(self.embeddings.mean(axis=0))

    @property
    def n_clips(self) -> int:
        return int(self.embeddings.shape[0])

    def similarity(self, embedding: np.ndarray, leave_out: int | None = None) -> float:
        """Cosine of a unit embedding with the centroid; `leave_out` drops that reference
        clip from the centroid (to score the reference's own clips without self-matching)."""
        centroid = self.centroid
        if leave_out is not None and self.n_clips > 1:
            centroid = _unit(np.delete(self.embeddings, leave_out, axis=0).mean(axis=0))
        return float(np.dot(embedding, centroid))

    def to_json(self) -> dict:
        return {"source": self.source, "n_clips": self.n_clips}


def speaker_reference(clips: list[np.ndarray], sample_rate: int, source: str = "") -> SpeakerReference:
    """The reference of a voice from some of its clips (mono float waveforms at sample_rate)."""
    if not clips:
        raise ValueError("a speaker reference needs at least one clip")
    return SpeakerReference(shared_encoder().embed_many([to_scorer_rate(c, sample_rate) for c in clips]), source)
