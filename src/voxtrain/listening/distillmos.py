"""A third naturalness ear: DistillMOS (Stahl & Gamper 2025), a small MOS predictor distilled
from an XLS-R based one, with the weights that the `distillmos` wheel ships
(distillmos/weights/distill_mos_v7.pt, MIT). One score, `distillmos`, on the 1-5 MOS scale.

Like DNSMOS it was trained on ratings of human (noisy, coded, enhanced) speech, so on synthetic
speech it is a proxy for how natural the audio sounds, not for prosody or the words.

We load the weights into our own network instead of importing the package: `distillmos`
imports torchaudio (and its `xls_r_sqa` dependency imports torchaudio, librosa and
transformers), and torchaudio pins torch builds that pull gigabytes of CUDA libraries. So the
wheel is installed without its dependencies and only its weights file is read (found with
`find_spec`, which runs none of the package's code). The network, as the weights define it:

- input: 16 kHz mono, cut into 7.68 s segments (122880 samples). A shorter clip is zero-padded
  to one segment; a longer one gets ceil((length - 7.68 s) / 1 s) + 1 segments spread evenly
  from its start to its end (so neighbours overlap, and the last ends at the clip's end). Each
  segment is scaled to a peak of 1;
- front end: a 20 ms Hann STFT (320 points, hop 160, the signal reflect-padded by 80 samples
  each side, no centring: 768 frames x 161 bins), the complex values compressed to magnitude
  ** 0.3 with their phase kept, real and imaginary parts as two channels;
- six 3x3 convolutions, each followed by LeakyReLU(0.1), channels 2 -> 64 -> 64 -> 128 -> 256
  -> 256 -> 256, no padding along frequency and stride 2 along it from the second on (161 ->
  159 -> 79 -> 39 -> 19 -> 9 -> 4 bins), padding 1 along time and stride 2 along it in the last
  (768 -> 384 frames); channels x bins flattened to 1024 features per frame;
- two batch norms over the 1024 features (one of the quality head, one of its transformer
  wrapper), a linear projection to 200, a sinusoidal position table (base 2 x 384, not 10000;
  loaded from the file), seven post-norm transformer encoder layers (8 heads, feed-forward
  400, ReLU), a batch norm over the 200;
- attention pooling over the 384 frames (a 200 -> 400 -> ReLU -> 1 scorer, softmax over time),
  a 200 -> 1 linear head and a sigmoid; MOS = 1 + 4 x the mean of the segments' sigmoids.

Resampling to 16 kHz is the caller's (`to_scorer_rate`, soxr). On 16 kHz input this network
gave the package's scores to within 1e-6 (checked once, with torchaudio stubbed out); on audio
at other rates they differ a little, as torchaudio's resampler is not soxr.
"""

from __future__ import annotations

import math

import numpy as np

from voxtrain.listening.common import SCORER_RATE, package_file, require

WEIGHTS_FILE = "weights/distill_mos_v7.pt"
SCORER = "DistillMOS"
# distillmos is installed without its declared dependencies (torchaudio would pull CUDA builds
# of torch); voxtrain reads nothing but its weights file.
INSTALL = "install it without its dependencies: pip install --no-deps distillmos==0.9.1"
SEGMENT = 122880  # 7.68 s at 16 kHz
MAX_HOP = SCORER_RATE  # segments of a long clip start at most 1 s apart
N_FFT, HOP = 320, 160
COMPRESSION = 0.3
CHANNELS = (64, 64, 128, 256, 256, 256)
BINS = 4  # frequency bins left after the convolutions
FRAMES = 384  # frames left after the convolutions (the position table's length)
FEATURES = CHANNELS[-1] * BINS
D_MODEL, HEADS, LAYERS, FEED_FORWARD = 200, 8, 7, 400

# The weights file's names -> ours (first matching prefix wins).
RENAMES = (
    ("cnn.cnn.", "front."),
    ("transformer_pool_attn.norm_input.", "norm_input."),
    ("transformer_pool_attn.transformer.norm.", "norm_projection."),
    ("transformer_pool_attn.transformer.linear_proj.", "projection."),
    ("transformer_pool_attn.transformer.position_encoding.pe", "position"),
    ("transformer_pool_attn.transformer.transformer_encoder.", "encoder."),
    ("transformer_pool_attn.norm_trans.", "norm_encoded."),
    ("transformer_pool_attn.pool.linear1.", "attention.0."),
    ("transformer_pool_attn.pool.linear2.", "attention.2."),
    ("transformer_pool_attn.pool.linear3.", "head."),
)


def our_name(key: str) -> str:
    """The name of a weights-file entry in our network (unchanged when no prefix matches, so a
    strict load names it)."""
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def segment_starts(n_samples: int) -> list[int]:
    """First sample of each SEGMENT-long window of a clip (padded to one segment when shorter)."""
    over = max(0, n_samples - SEGMENT)
    n = math.ceil(over / MAX_HOP) + 1
    return [int(c * over) for c in np.linspace(0.0, 1.0, n)]


def segments(audio: np.ndarray) -> np.ndarray:
    """(n_segments, SEGMENT) network inputs of one mono 16 kHz clip, each scaled to peak 1 (an
    empty or silent clip gives one segment of zeros: silence is scored, not an error)."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < SEGMENT:
        audio = np.pad(audio, (0, SEGMENT - len(audio)))
    out = np.stack([audio[s : s + SEGMENT] for s in segment_starts(len(audio))])
    return out / (np.abs(out).max(axis=1, keepdims=True) + np.float32(1e-8))


def position_table(frames: int = FRAMES, dim: int = D_MODEL) -> np.ndarray:
    """(1, frames, dim) sinusoidal positions with wavelengths up to 2 x frames x 2 pi: sin in the
    even features, cos in the odd ones (what the weights file holds; a test checks)."""
    rate = np.exp(np.arange(0, dim, 2) * (-math.log(2 * frames) / dim))
    angle = np.arange(frames)[:, None] * rate[None, :]
    table = np.zeros((1, frames, dim))
    table[0, :, 0::2], table[0, :, 1::2] = np.sin(angle), np.cos(angle)
    return table.astype(np.float32)


def _network(torch):
    """The network class, defined once torch is imported (voxtrain imports torch lazily here)."""
    nn = torch.nn

    class DistillMosNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            previous = 2
            for i, channels in enumerate(CHANNELS):
                stride = (2 if i > 0 else 1, 2 if i == len(CHANNELS) - 1 else 1)  # (frequency, time)
                layers += [nn.Conv2d(previous, channels, 3, stride=stride, padding=(0, 1)), nn.LeakyReLU(0.1)]
                previous = channels
            self.front = nn.Sequential(*layers)
            self.norm_input = nn.BatchNorm1d(FEATURES)
            self.norm_projection = nn.BatchNorm1d(FEATURES)
            self.projection = nn.Linear(FEATURES, D_MODEL)
            self.register_buffer("position", torch.from_numpy(position_table()))
            layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FEED_FORWARD, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.norm_encoded = nn.BatchNorm1d(D_MODEL)
            self.attention = nn.Sequential(nn.Linear(D_MODEL, 2 * D_MODEL), nn.ReLU(), nn.Linear(2 * D_MODEL, 1))
            self.head = nn.Linear(D_MODEL, 1)
            self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

        def spectrum(self, x):
            """(batch, 2, 161, 768) compressed complex spectrogram of (batch, SEGMENT) segments."""
            pad = (N_FFT - HOP) // 2
            x = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
            spec = torch.stft(x, N_FFT, HOP, N_FFT, self.window, center=False, return_complex=True)
            magnitude = spec.abs().clamp_min(1e-12)
            spec = spec * (magnitude ** (COMPRESSION - 1.0))
            return torch.stack([spec.real, spec.imag], dim=1)

        def forward(self, x):
            """(batch,) quality in 0..1 of (batch, SEGMENT) peak-normalised 16 kHz segments."""
            h = self.front(self.spectrum(x))  # (batch, 256, 4, 384)
            h = h.flatten(1, 2)  # (batch, 1024, 384): channel-major features
            h = self.norm_projection(self.norm_input(h)).transpose(1, 2)
            h = self.encoder(self.projection(h) + self.position)
            h = self.norm_encoded(h.transpose(1, 2)).transpose(1, 2)  # (batch, 384, 200)
            weights = torch.softmax(self.attention(h), dim=1)  # (batch, 384, 1)
            pooled = (weights * h).sum(dim=1)
            return torch.sigmoid(self.head(pooled))[:, 0]

    return DistillMosNetwork


def load_weights(torch) -> dict:
    """The weights file's state dict, under its own names."""
    path = package_file("distillmos", WEIGHTS_FILE, SCORER, install=INSTALL)
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


class DistillMos:
    """The network with distillmos's weights; scores 16 kHz clips."""

    def __init__(self, threads: int | None = 1) -> None:
        """threads: torch's threads while scoring (None: leave torch's setting alone)."""
        torch = require("torch", SCORER)
        self.network = _network(torch)()
        self.network.load_state_dict({our_name(k): v for k, v in load_weights(torch).items()}, strict=True)
        self.network.eval()
        self.threads = threads
        self._torch = torch

    def score_many(self, clips: list[np.ndarray]) -> list[float]:
        """The MOS (1-5) of each mono 16 kHz clip in [-1, 1], one clip's segments per batch."""
        torch = self._torch
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                quality = [self.network(torch.from_numpy(segments(c))).mean().item() for c in clips]
        finally:
            torch.set_num_threads(before)
        return [1.0 + 4.0 * q for q in quality]

    def score(self, audio: np.ndarray) -> float:
        return self.score_many([audio])[0]
