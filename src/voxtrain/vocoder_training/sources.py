"""What a vocoder fine-tune is made from, each checked against the others before any work:
the feature store, the acoustic checkpoint trained on it, and the corpus it was prepared from.

Every refusal is a `VocoderTrainingError` naming the file or field at fault and what to do (a
checkpoint's unusable embedded config: the ConfigError that names it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxtrain.artifacts.store import FeatureStore
from voxtrain.audio import AudioError, load_audio, mel_spectrogram, num_frames, trim_silence
from voxtrain.config import AudioConfig, Config, config_from_dict
from voxtrain.data.loader import collate
from voxtrain.data.metadata import PrepareError, check_corpus_dir, read_metadata
from voxtrain.errors import VoxtrainError
from voxtrain.inference.errors import SynthError
from voxtrain.inference.loader import AcousticModel, load_acoustic_model
from voxtrain.model import FastSpeech2

# The settings that define a mel frame: a model and a store must agree on every one.
MEL_FIELDS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax")
# Mean |log-mel| difference between the store's mel of a clip (float16) and the mel of the
# corpus file reloaded here. Rounding to float16 leaves ~0.002; another recording or a
# re-render of the clip differs by far more than this.
MEL_TOLERANCE = 0.1


class VocoderTrainingError(VoxtrainError, RuntimeError):
    """A vocoder fine-tune cannot start as asked; the message says what to change."""


def store_audio(store: FeatureStore) -> AudioConfig:
    try:
        return AudioConfig(**store.audio_config)
    except ValueError as err:
        raise VocoderTrainingError(f"{store.layout.config}: unusable audio settings: {err}") from None


def load_acoustic(path: Path, store: FeatureStore) -> AcousticModel:
    """The acoustic model of a training checkpoint (.pt) or export (.safetensors + .json), as
    every voice is loaded (voxtrain.inference.loader: eval mode, gradients off), after checking
    that it was trained on features like the store's."""
    path = Path(path)
    try:
        acoustic = load_acoustic_model(path)
    except SynthError as err:
        raise VocoderTrainingError(f"--checkpoint: {err}") from None
    _check_mel_settings(acoustic.config.audio, store, path)
    if acoustic.meta["symbols"] != store.symbols.to_dict():
        raise VocoderTrainingError(
            f"--checkpoint {path} was trained with another symbol table than the feature store {store.root}: its "
            f"phoneme ids would mean other sounds. Pass the acoustic checkpoint trained on this store (`voxtrain "
            f"train --features {store.root}`), or the store it was trained on."
        )
    return acoustic


def _check_mel_settings(model_audio: AudioConfig, store: FeatureStore, path: Path) -> None:
    saved = store.audio_config
    wrong = [f"audio.{k}: {saved.get(k)!r} in the store, {getattr(model_audio, k)!r} in the checkpoint"
             for k in MEL_FIELDS if saved.get(k) != getattr(model_audio, k)]
    if wrong:
        listing = "\n  ".join(wrong)
        raise VocoderTrainingError(
            f"the feature store {store.root} and the acoustic checkpoint {path} use different mel settings:\n"
            f"  {listing}\nThe acoustic model must have been trained on this store (or on one prepared with the same "
            f"audio settings): pass the checkpoint of `voxtrain train --features {store.root}`, or the store it "
            f"was trained on."
        )


def run_config(cfg: Config, acoustic: AcousticModel, store: FeatureStore) -> Config:
    """The run's config: the given one, with the audio settings of the store and the text and
    model sections of the acoustic checkpoint (config.yaml then describes the whole run). An
    audio setting the given config sets explicitly and the store contradicts is an error."""
    saved = store.audio_config
    conflicts = [f"audio.{k}: {getattr(cfg.audio, k)!r} in the config, {saved.get(k)!r} in the store"
                 for k in sorted(cfg.audio.model_fields_set) if saved.get(k) != getattr(cfg.audio, k)]
    if conflicts:
        raise VocoderTrainingError(
            "the config sets audio settings the feature store was not prepared with:\n  " + "\n  ".join(conflicts)
            + f"\nThe audio settings come from {store.layout.config}: remove them from the config (or --set)."
        )
    data = cfg.to_dict()
    data["audio"] = dict(store_audio(store).model_dump(mode="json"))
    data["model"], data["text"] = acoustic.config.to_dict()["model"], acoustic.config.to_dict()["text"]
    return config_from_dict(data, "vocoder fine-tune settings")


def check_segments(cfg: Config) -> None:
    """Refuse segments too short for the STFTs of the losses."""
    vcfg, hop = cfg.vocoder_training, cfg.audio.hop_length
    samples = vcfg.segment_frames * hop
    need = max([cfg.audio.n_fft // 2] + [n_fft // 2 for n_fft, _, _ in vcfg.stft_resolutions])
    if samples <= need:
        raise VocoderTrainingError(
            f"vocoder_training.segment_frames {vcfg.segment_frames} makes segments of {samples} samples, too short "
            f"for the STFTs of the losses (more than {need} needed): raise segment_frames to at least "
            f"{need // hop + 1}, or drop the largest vocoder_training.stft_resolutions"
        )


def corpus_audio_files(corpus: Path, store: FeatureStore) -> list[Path]:
    """The audio file of each clip of the store, in store order, found as `prepare` finds them
    (metadata.csv ids, wavs/ID with the first readable extension)."""
    corpus = Path(corpus)
    try:
        check_corpus_dir(corpus)
        entries = {e.id: e for e in read_metadata(corpus).entries}
    except PrepareError as err:
        raise VocoderTrainingError(f"--corpus: {err}") from None
    files, missing = [], []
    for r in store.records:
        e = entries.get(r["id"])
        if e is None or e.rejected:
            missing.append(f"{r['id']} ({e.detail if e is not None else 'not in metadata.csv'})")
            continue
        files.append(corpus / "wavs" / e.audio)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise VocoderTrainingError(
            f"{len(missing)} clips of the feature store {store.root} have no usable audio in the corpus {corpus}: "
            f"{', '.join(missing[:3])}{more}. --corpus must be the folder `voxtrain prepare` made the store from, "
            f"with every clip's audio in place; restore the files, or prepare the corpus again into a new store "
            f"and fine-tune the acoustic model on it."
        )
    return files


def real_audio(path: Path, audio: AudioConfig, record: dict[str, Any], stored_mel: np.ndarray) -> np.ndarray:
    """The audio whose mel the store holds, as prepare made it (loaded, resampled, trimmed),
    cut to n_frames * hop samples: the length the vocoder makes from n_frames frames."""
    clip_id, n_frames, hop = record["id"], int(record["n_frames"]), audio.hop_length
    try:
        wav = load_audio(path, audio.sample_rate)
    except AudioError as err:
        raise VocoderTrainingError(f"clip {clip_id}: {err.detail}") from None
    if audio.trim_silence:
        wav = trim_silence(wav, audio)
    frames = num_frames(len(wav), audio) if len(wav) > (audio.n_fft - hop) // 2 else 0
    redo = ("Pass the corpus the store was prepared from, or prepare this corpus again (`voxtrain prepare "
            "CORPUS --out NEWSTORE`) and fine-tune the acoustic model on that store.")
    if frames != n_frames:
        trimmed = " after trimming silence" if audio.trim_silence else ""
        raise VocoderTrainingError(
            f"clip {clip_id}: {path} gives {len(wav)} samples{trimmed} ({frames} frames of {hop}), but the feature "
            f"store's mel of it has {n_frames} frames ({n_frames * hop} to {(n_frames + 1) * hop - 1} samples): "
            f"the store and the corpus do not match (the file was replaced or edited since prepare). {redo}"
        )
    difference = float(np.mean(np.abs(mel_spectrogram(wav, audio) - stored_mel.astype(np.float32))))
    if not difference <= MEL_TOLERANCE:
        raise VocoderTrainingError(
            f"clip {clip_id}: {path} has the length the feature store expects but another sound (mean log-mel "
            f"difference {difference:.3f}, over {MEL_TOLERANCE}): the store and the corpus do not match. {redo}"
        )
    return np.ascontiguousarray(wav[: n_frames * hop], dtype=np.float32)


@torch.inference_mode()
def teacher_forced_mel(model: FastSpeech2, item: dict[str, Any]) -> np.ndarray:
    """(T, n_mels) mel the acoustic model predicts for one clip given its ground truth: the
    aligner's durations, the clip's pitch and energy. `item` is a FeatureDataset item."""
    out = model(collate([item]).to(next(model.parameters()).device))
    mel = out["mel_postnet"] if out["mel_postnet"] is not None else out["mel_pred"]
    return mel[0].float().cpu().numpy()
