"""Naturalness proxies: DNSMOS P.835 (Reddy et al. 2022) and DNSMOS P.808, Microsoft's
non-intrusive MOS predictors, from the ONNX models that the `speechmos` wheel ships
(dnsmos_models/sig_bak_ovr.onnx and model_v8.onnx).

SIG is the speech signal's quality, BAK the background's (noise, buzz), OVRL the overall
impression, each on the 1-5 MOS scale. The model was trained on noisy and enhanced *human*
speech, so on synthetic speech it is a proxy: it ranks vocoder artefacts (Griffin-Lim's
phasiness, noise) well, and says nothing about prosody or whether the words are right.

Why our own runner instead of `speechmos.dnsmos`: that module imports `requests` and
`librosa` at import time (librosa alone takes seconds and pulls numba), and needs both only
for things we do not use (downloads, the P.808 model's mel features, reading files). The
P.835 model takes the raw 16 kHz waveform, so running it is a few lines of onnxruntime. The
runner follows the reference implementation (dnsmos_local.py) exactly: a clip shorter than the
model's 9.01 s input is repeated (doubled until long enough), longer ones are cut into 9.01 s
windows 1 s apart, each window's raw SIG/BAK/OVRL goes through the published P.835
polynomials, and a clip's score is the mean over its windows.

P.808 (one overall MOS, a second ear trained on other ratings) reads the same windows, less
their last 10 ms, as 120-band dB mels; `p808_features` computes them as the reference's
librosa call does (a test holds the two together), without importing librosa.
"""

from __future__ import annotations

import numpy as np

from voxtrain.listening.common import SCORER_RATE, package_file, require

MODEL_FILE = "dnsmos_models/sig_bak_ovr.onnx"
P808_MODEL_FILE = "dnsmos_models/model_v8.onnx"
# P.808's input features (the reference: librosa.feature.melspectrogram with these settings,
# centred frames with zero padding, a periodic Hann window, power 2, Slaney mels; then dB
# relative to the window's maximum, floored 80 dB below it, mapped by (dB + 40) / 40).
P808_N_FFT, P808_HOP, P808_MELS, P808_TOP_DB = 321, 160, 120, 80.0
INPUT_SECONDS = 9.01
INPUT_SAMPLES = int(INPUT_SECONDS * SCORER_RATE)
HOP_SAMPLES = SCORER_RATE
# Raw model output -> MOS, per dimension (highest power first), from the P.835 reference code.
P835_POLYNOMIALS = {
    "dnsmos_sig": (-0.08397278, 1.22083953, 0.0052439),
    "dnsmos_bak": (-0.13166888, 1.60915514, -0.39604546),
    "dnsmos_ovrl": (-0.06766283, 1.11546468, 0.04602535),
}
# Column of each dimension in the model's (N, 3) output.
_COLUMNS = {"dnsmos_sig": 0, "dnsmos_bak": 1, "dnsmos_ovrl": 2}


def windows(audio: np.ndarray) -> np.ndarray:
    """(n_windows, INPUT_SAMPLES) model inputs of one 16 kHz clip. An empty clip counts as
    silence (a model that says nothing is scored, not an error)."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) == 0:
        audio = np.zeros(INPUT_SAMPLES, dtype=np.float32)
    while len(audio) < INPUT_SAMPLES:
        audio = np.concatenate([audio, audio])
    n = int(np.floor(len(audio) / SCORER_RATE) - INPUT_SECONDS) + 1
    starts = [i * HOP_SAMPLES for i in range(max(n, 1)) if i * HOP_SAMPLES + INPUT_SAMPLES <= len(audio)]
    return np.stack([audio[s : s + INPUT_SAMPLES] for s in starts])


def p808_features(window: np.ndarray) -> np.ndarray:
    """(frames, 120) P.808 input of one 16 kHz window (the reference's librosa features)."""
    from voxtrain.audio import mel_basis

    padded = np.pad(np.asarray(window, dtype=np.float64), P808_N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, P808_N_FFT)[::P808_HOP]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(P808_N_FFT) / P808_N_FFT)  # periodic
    power = np.abs(np.fft.rfft(frames * hann, axis=1)) ** 2
    mel = power @ mel_basis(SCORER_RATE, P808_N_FFT, P808_MELS, 0.0, SCORER_RATE / 2).T.astype(np.float64)
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(max(1e-10, float(mel.max())))
    db = np.maximum(db, db.max() - P808_TOP_DB)
    return ((db + 40) / 40).astype(np.float32)


def _session(ort, file: str, threads: int | None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(package_file("speechmos", file, "DNSMOS")), options,
                                providers=["CPUExecutionProvider"])


class DnsMos:
    """The two onnxruntime sessions, reused for every clip."""

    def __init__(self, threads: int | None = 1) -> None:
        """threads: onnxruntime's intra-op threads (None: its default, every core)."""
        ort = require("onnxruntime", "DNSMOS")
        self.session = _session(ort, MODEL_FILE, threads)
        self.p808 = _session(ort, P808_MODEL_FILE, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.p808_input = self.p808.get_inputs()[0].name

    def score(self, audio: np.ndarray) -> dict[str, float]:
        """dnsmos_sig, dnsmos_bak, dnsmos_ovrl and dnsmos_p808 of one mono 16 kHz clip in [-1, 1]."""
        inputs = windows(audio)
        raw = self.session.run(None, {self.input_name: inputs})[0]
        scores = {name: float(np.mean(np.polyval(P835_POLYNOMIALS[name], raw[:, col])))
                  for name, col in _COLUMNS.items()}
        # One window at a time: the model's input is a single (1, frames, 120) clip.
        p808 = [self.p808.run(None, {self.p808_input: p808_features(w[:-P808_HOP])[None]})[0].item()
                for w in inputs]
        return scores | {"dnsmos_p808": float(np.mean(p808))}
