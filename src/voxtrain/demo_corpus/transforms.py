"""Signal transforms that turn a rendered voice into another speaker, or put it through a worse channel.

Every function takes a mono float waveform (any scale; the corpus uses [-1, 1]) and returns a
new float64 one; none of them changes the sample rate.

- `speaker_shift`: resampling. Played at the original rate, every frequency (F0, the formants,
  hence the vocal-tract length a listener hears) is `factor` times higher and the clip is
  `factor` times shorter, as if a smaller (factor > 1) or larger (< 1) speaker said it faster.
- `time_stretch`: WSOLA, which changes duration but not pitch. After a shift it restores the
  original duration, so only pitch and formants move and the speaking rate stays natural.
- `band_limit`, `add_noise`, `degrade`: a telephone-like channel (the hardest adaptation case).
"""

from __future__ import annotations

import numpy as np

# The resampler rolls its cut-off off over this fraction of the kept band: a brick-wall cut
# rings (Gibbs) around every transient, a short cosine slope does not, and speech has almost
# no energy in the top few percent of the band anyway.
_ROLLOFF_FRACTION = 0.04
# Padded lengths the resampler tries, to find one that divides by its factor (_padded_length).
_PAD_SEARCH = 4096
# WSOLA frame and search range. A 40 ms frame holds several pitch periods of any voice (so
# a frame's spectrum is stable), and searching +-7.5 ms around the nominal position always
# covers one full period down to 67 Hz, so a frame that continues the waveform in phase exists.
_WSOLA_FRAME_S = 0.040
_WSOLA_TOLERANCE_S = 0.0075
# band_limit's cosine slope, inside the band, so nothing at all passes beyond its edges.
_BAND_TRANSITION_HZ = 100.0


def _as_signal(wav: np.ndarray) -> np.ndarray:
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D), got shape {x.shape}")
    return x


def _cosine_ramp(n: int) -> np.ndarray:
    """n values rising from just above 0 to just below 1 along half a cosine period."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _padded_length(n: int, factor: float) -> int:
    """A length a little over n whose division by factor is (nearly) whole. The FFT resampler
    maps output sample j to input time j * padded / round(padded / factor): with a whole
    quotient that is j * factor exactly, otherwise the clip drifts by up to half a sample
    towards its end, a phase error that grows with frequency."""
    candidates = n + max(64, n // 8) + np.arange(_PAD_SEARCH)
    quotients = candidates / factor
    return int(candidates[np.argmin(np.abs(quotients - np.rint(quotients)))])


def speaker_shift(wav: np.ndarray, factor: float) -> np.ndarray:
    """`wav` resampled to round(len / factor) samples: at the same playback rate pitch and
    formants move up by `factor` (down when factor < 1) and the duration scales by 1 / factor.

    FFT resampling: the spectrum is cut (factor > 1) or zero-extended (factor < 1) to the new
    length, which is exact band-limited interpolation. Zero padding first keeps the FFT's
    wrap-around from folding the clip's end onto its start.
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    x = _as_signal(wav)
    n_out = max(1, round(len(x) / factor))
    if factor == 1.0 or len(x) < 2:
        return x.copy()
    padded = np.pad(x, (0, _padded_length(len(x), factor) - len(x)))
    n_in = len(padded)
    m = max(2, round(n_in / factor))
    spectrum = np.fft.rfft(padded)
    kept = min(len(spectrum), m // 2 + 1)
    out = np.zeros(m // 2 + 1, dtype=np.complex128)
    out[:kept] = spectrum[:kept]
    slope = max(1, int(kept * _ROLLOFF_FRACTION))
    out[kept - slope : kept] *= _cosine_ramp(slope)[::-1]
    return np.fft.irfft(out, m)[:n_out] * (m / n_in)


def time_stretch(wav: np.ndarray, n_out: int, sample_rate: int) -> np.ndarray:
    """`wav` made exactly `n_out` samples long without changing its pitch (WSOLA).

    Output frames sit a half frame apart and are Hann-windowed, so they add up to a flat
    envelope. Output frame k (centred at output time k * hop) is cut from the input around time
    k * hop / stretch, moved by up to the tolerance to where the input best continues the frame
    taken before it (largest normalized cross-correlation with the input that followed that
    frame). So output time t holds the input at t / stretch give or take the tolerance, never
    drifting further, which keeps per-phoneme alignments true.
    """
    x = _as_signal(wav)
    if n_out < 1:
        raise ValueError(f"n_out must be >= 1, got {n_out}")
    if len(x) == 0:
        return np.zeros(n_out)
    frame = 2 * max(16, round(_WSOLA_FRAME_S * sample_rate / 2))
    hop, half = frame // 2, frame // 2
    tol = max(1, round(_WSOLA_TOLERANCE_S * sample_rate))
    step = len(x) / n_out  # input samples per output sample
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)  # periodic Hann: sums to 1
    n_frames = n_out // hop + 2
    lead = half + tol  # zeros before the input, so every candidate frame can be cut out
    xp = np.pad(x, (lead, lead + hop + frame + int(np.ceil(n_frames * hop * step)) - len(x) + 1))
    out = np.zeros(n_frames * hop + frame)
    previous = 0
    for k in range(n_frames):
        nominal = round(k * hop * step)
        centre = nominal
        if k > 0:
            follow = xp[previous + hop - half + lead : previous + hop + half + lead]
            region = xp[nominal - tol - half + lead : nominal + tol + half + lead]
            centre = nominal - tol + _best_match(region, follow)
        out[k * hop : k * hop + frame] += window * xp[centre - half + lead : centre + half + lead]
        previous = centre
    return out[half : half + n_out]


def _best_match(region: np.ndarray, template: np.ndarray) -> int:
    """Offset of the window of `region` most like `template` (normalized cross-correlation:
    the raw one favours whichever window is loudest, not the one in phase). In digital silence
    nothing matches better than anything else, so the middle (no shift) is taken."""
    products = np.correlate(region, template, mode="valid")
    if not np.any(products):
        return len(products) // 2
    energy = np.cumsum(np.concatenate([[0.0], region**2]))
    norms = np.sqrt(np.maximum(energy[len(template):] - energy[: -len(template)], 1e-12))
    return int(np.argmax(products / norms))


def shift_keep_tempo(wav: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Pitch and formants times `factor`, duration (and so every phoneme's timing) unchanged."""
    x = _as_signal(wav)
    return time_stretch(speaker_shift(x, factor), len(x), sample_rate)


def band_mask(n_samples: int, sample_rate: int, low_hz: float | None, high_hz: float | None) -> np.ndarray:
    """rfft gains of a zero-phase band-pass: 0 outside [low_hz, high_hz] (None: no edge there),
    1 inside it apart from a short cosine slope just inside each edge."""
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sample_rate)
    gain = np.ones(len(freqs))
    if low_hz is not None:
        rising = np.clip((freqs - low_hz) / _BAND_TRANSITION_HZ, 0.0, 1.0)
        gain *= 0.5 - 0.5 * np.cos(np.pi * rising)
    if high_hz is not None:
        falling = np.clip((high_hz - freqs) / _BAND_TRANSITION_HZ, 0.0, 1.0)
        gain *= 0.5 - 0.5 * np.cos(np.pi * falling)
    return gain


def band_limit(wav: np.ndarray, sample_rate: int, low_hz: float | None, high_hz: float | None) -> np.ndarray:
    """`wav` with everything below low_hz and above high_hz removed (zero-phase, via the FFT)."""
    x = _as_signal(wav)
    if len(x) == 0 or (low_hz is None and high_hz is None):
        return x.copy()
    return np.fft.irfft(np.fft.rfft(x) * band_mask(len(x), sample_rate, low_hz, high_hz), len(x))


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`wav` plus `noise` scaled so that mean power(wav) / mean power(noise) is snr_db
    (both powers over the whole clip, pauses included)."""
    x, n = _as_signal(wav), _as_signal(noise)
    if len(n) != len(x):
        raise ValueError(f"noise has {len(n)} samples, the clip {len(x)}")
    signal_power, noise_power = float(np.mean(x**2)), float(np.mean(n**2))
    if signal_power == 0.0 or noise_power == 0.0:
        return x.copy()
    return x + n * np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))


def degrade(wav: np.ndarray, sample_rate: int, low_hz: float | None, high_hz: float | None,
            snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """A channel: the band limit, then white noise through the same band at snr_db (None: no
    noise). The noise is filtered too, as a telephone line's would be, so the SNR holds within
    the band and nothing is left above its edge."""
    x = band_limit(wav, sample_rate, low_hz, high_hz)
    if snr_db is None:
        return x
    noise = band_limit(rng.standard_normal(len(x)), sample_rate, low_hz, high_hz)
    return add_noise(x, noise, snr_db)


def to_pcm16(wav: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """int16 samples of a [-1, 1] waveform. A transform can overshoot full scale (resampling's
    interpolation, added noise); the whole clip is then scaled down to `peak` rather than
    clipped, which would add distortion (and keeps the SNR, which scaling does not change)."""
    x = _as_signal(wav)
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    if top > peak:
        x = x * (peak / top)
    return np.round(x * 32767.0).astype(np.int16)
