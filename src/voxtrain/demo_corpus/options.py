"""What make-corpus does to each rendered clip to make another speaker of it: the options,
checked, and their application to one clip."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voxtrain.demo_corpus import transforms
from voxtrain.demo_corpus.espeak import DEFAULT_ESPEAK_VOICE, check_espeak_voice
from voxtrain.demo_corpus.sentences import CorpusError

# Beyond about 40% either way a resampled voice stops sounding like a person (a cartoon
# chipmunk or a slowed tape); inside it, it sounds like another speaker.
SPEAKER_SHIFT_RANGE = (0.6, 1.6)


@dataclass(frozen=True)
class Channel:
    """A degradation preset: a band limit (None: no edge) and additive noise (None: none)."""

    low_hz: float | None
    high_hz: float | None
    snr_db: float | None
    description: str


DEGRADE_PRESETS: dict[str, Channel] = {
    "phone": Channel(300.0, 3400.0, 15.0, "telephone band 300-3400 Hz, white noise at 15 dB SNR"),
    "noisy": Channel(None, None, 10.0, "full band, white noise at 10 dB SNR"),
}


@dataclass(frozen=True)
class VoiceOptions:
    """The transforms make-corpus applies to every clip, in this order: the speaker shift
    (resampling by `speaker_shift`; with `keep_tempo`, time-stretched back to the original
    duration), then the `degrade` channel preset. `espeak_voice` picks the espeak voice
    (variants like 'en-us+f3' are other speakers) and only applies to voice='espeak'."""

    speaker_shift: float = 1.0
    keep_tempo: bool = False
    degrade: str | None = None
    espeak_voice: str = DEFAULT_ESPEAK_VOICE

    def check(self, voice: str) -> None:
        """CorpusError naming the option and what it accepts, for the first bad value."""
        low, high = SPEAKER_SHIFT_RANGE
        shift = self.speaker_shift
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) \
                or not low <= shift <= high:
            raise CorpusError(f"speaker_shift={shift!r} is out of range: give a number from {low} to {high} "
                              "(1.15 raises pitch and formants by 15%, 0.87 lowers them; 1.0 leaves the voice)")
        if not isinstance(self.keep_tempo, bool):
            raise CorpusError(f"keep_tempo={self.keep_tempo!r}: give True or False")
        if self.degrade is not None and self.degrade not in DEGRADE_PRESETS:
            presets = "; ".join(f"{name!r}: {c.description}" for name, c in DEGRADE_PRESETS.items())
            raise CorpusError(f"degrade={self.degrade!r} is not a preset: use None or one of {presets}")
        if self.espeak_voice != DEFAULT_ESPEAK_VOICE and voice != "espeak":
            raise CorpusError(f"espeak_voice={self.espeak_voice!r} only applies to voice='espeak' "
                              f"(voice is {voice!r})")
        if voice == "espeak":
            check_espeak_voice(self.espeak_voice)

    @property
    def active(self) -> bool:
        """Whether any clip changes at all (the espeak voice is chosen at rendering, not here)."""
        return self.speaker_shift != 1.0 or self.degrade is not None

    @property
    def time_scale(self) -> float:
        """Output duration over input duration: what every alignment time is multiplied by."""
        return 1.0 if self.keep_tempo else 1.0 / self.speaker_shift

    def describe(self, voice: str) -> str:
        """A short name of the resulting speaker, e.g. 'piper shift 1.15 keep-tempo, phone'."""
        parts = [f"espeak {self.espeak_voice}" if voice == "espeak" else voice]
        if self.speaker_shift != 1.0:
            parts.append(f"shift {self.speaker_shift:g}" + (" keep-tempo" if self.keep_tempo else ""))
        return " ".join(parts) + (f", {self.degrade}" if self.degrade else "")

    def apply(self, wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        """One clip (float, [-1, 1]) transformed; `rng` draws the noise of a degrade preset."""
        out = np.asarray(wav, dtype=np.float64)
        if self.speaker_shift != 1.0:
            out = (transforms.shift_keep_tempo(out, self.speaker_shift, sample_rate) if self.keep_tempo
                   else transforms.speaker_shift(out, self.speaker_shift))
        if self.degrade is not None:
            channel = DEGRADE_PRESETS[self.degrade]
            out = transforms.degrade(out, sample_rate, channel.low_hz, channel.high_hz, channel.snr_db, rng)
        return out
