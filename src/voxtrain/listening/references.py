"""Reference rows: what the scores of a voice mean, measured on the same scorers.

- ceiling: the corpus's own validation recordings (when the corpus folder is at hand), and
  their HiFi-GAN copy-synthesis (the store's ground-truth mels through the vocoder): the best a
  FastSpeech2 + HiFi-GAN voice can sound;
- floor: the Griffin-Lim copy-synthesis of the same mels (a weak vocoder on perfect mels).

They speak the validation texts, not the held-out sentences (no recording of those exists), so
their WER is comparable only roughly. The speaker reference (the centroid that similarity is
measured against) is made of those validation clips too: the real recordings when the corpus
is given, else their copy-synthesis (all a trainer has: the feature store). Scoring the
reference's own clips against it would let each clip match itself, so those rows compare each
clip with the centroid of the others (leave one out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxtrain.artifacts.store import FeatureStore
from voxtrain.audio import load_audio
from voxtrain.config import AudioConfig
from voxtrain.data.metadata import AUDIO_EXTENSIONS
from voxtrain.errors import VoxtrainError
from voxtrain.listening.scoring import Scorers
from voxtrain.listening.speaker import SpeakerReference, speaker_reference
from voxtrain.listening.synthesis import ListeningRow, score_clips
from voxtrain.vocoder import load_vocoder

REAL = "real validation clips"
COPY_SYNTHESIS = "HiFi-GAN copy-synthesis of the validation clips"


class ReferenceClipsError(VoxtrainError, ValueError):
    """Reference clips cannot be made; the message names the file or store and the fix."""


@dataclass
class ValidationClips:
    """The validation split of a feature store: ids, texts and ground-truth log-mels (n_mels, T)."""

    ids: list[str]
    texts: list[str]
    mels: list[np.ndarray]
    audio: AudioConfig

    @property
    def label(self) -> str:
        return f"validation clips ({len(self.ids)})"


def validation_clips(store: FeatureStore, max_clips: int | None = None) -> ValidationClips:
    """The first max_clips (all when None) clips of the store's validation split."""
    indices = store.split_indices("val")[:max_clips]
    if not indices:
        raise ReferenceClipsError(f"{store.root} has no validation clips (data.val_size 0?); the references need some")
    try:
        audio = AudioConfig.model_validate(store.audio_config)
    except ValueError as err:
        raise ReferenceClipsError(f"{store.layout.config}: audio settings this voxtrain cannot read ({err}); "
                                  "prepare the store again with this voxtrain") from None
    records = [store.records[i] for i in indices]
    return ValidationClips([r["id"] for r in records], [r.get("normalized") or r["text"] for r in records],
                           [store.item(i)["mel"].T for i in indices], audio)


def real_clips(corpus: str | Path, ids: list[str], sample_rate: int) -> list[np.ndarray]:
    """The recordings of the given clip ids in an LJSpeech-format corpus folder (CORPUS/wavs/ID.*)."""
    wavs = Path(corpus) / "wavs"
    out = []
    for clip_id in ids:
        path = next((wavs / f"{clip_id}{ext}" for ext in AUDIO_EXTENSIONS if (wavs / f"{clip_id}{ext}").is_file()),
                    None)
        if path is None:
            raise ReferenceClipsError(f"{wavs}: no audio file for clip {clip_id!r} of the feature store; pass the "
                                 "corpus folder the store was prepared from (or none, to use copy-synthesis)")
        out.append(load_audio(path, sample_rate))
    return out


def vocode(mels: list[np.ndarray], audio: AudioConfig, vocoder: str = "hifigan",
           device: str | torch.device = "cpu") -> list[np.ndarray]:
    """Waveforms of log-mels (n_mels, T) through a vocoder (copy-synthesis)."""
    voc = load_vocoder(vocoder, None, audio, device)
    return [voc(torch.from_numpy(np.ascontiguousarray(m)))[0].float().cpu().numpy() for m in mels]


def validation_reference(store: FeatureStore, corpus: str | Path | None = None, max_clips: int | None = None,
                         device: str | torch.device = "cpu") -> SpeakerReference:
    """The speaker reference of a training corpus: its real validation clips when the corpus
    folder is given, else their HiFi-GAN copy-synthesis."""
    clips = validation_clips(store, max_clips)
    if corpus is not None:
        return speaker_reference(real_clips(corpus, clips.ids, clips.audio.sample_rate), clips.audio.sample_rate, REAL)
    return speaker_reference(vocode(clips.mels, clips.audio, "hifigan", device), clips.audio.sample_rate,
                             COPY_SYNTHESIS)


def reference_rows(
    store: FeatureStore,
    scorers: Scorers,
    corpus: str | Path | None = None,
    max_clips: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[list[ListeningRow], SpeakerReference | None]:
    """Ceiling and floor rows on the validation clips, and the speaker reference they define
    (None when the speaker scorer is off)."""
    clips = validation_clips(store, max_clips)
    rate = clips.audio.sample_rate
    sets = []
    if corpus is not None:
        sets.append(("real validation clips", "ceiling", real_clips(corpus, clips.ids, rate)))
    sets.append(("HiFi-GAN copy-synthesis", "ceiling", vocode(clips.mels, clips.audio, "hifigan", device)))
    sets.append(("Griffin-Lim copy-synthesis", "floor", vocode(clips.mels, clips.audio, "griffin-lim", device)))
    reference = None
    if "speaker" in scorers.enabled:
        reference = speaker_reference(sets[0][2], rate, REAL if corpus is not None else COPY_SYNTHESIS)
    rows = [score_clips(name, wavs, rate, clips.texts, scorers, reference, leave_one_out=reference is not None,
                        kind=kind, sentence_set=clips.label) for name, kind, wavs in sets]
    return rows, reference
