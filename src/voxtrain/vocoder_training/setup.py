"""What a `train-vocoder` invocation is: a fresh fine-tune or the exact resume of one.

A run directory with a valid checkpoint is resumed, and only with the inputs it started
from (the same feature store content and acoustic checkpoint bytes): other inputs would
change the training pairs under the optimizer's feet, so they are refused, not mixed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from voxtrain.artifacts.checkpoints import CheckpointManager
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.lock import RunLock
from voxtrain.artifacts.recorder import RunRecorder
from voxtrain.artifacts.run_info import record_session
from voxtrain.artifacts.store import FeatureStore
from voxtrain.atomic import remove_temp_files, write_text_atomic
from voxtrain.config import Config
from voxtrain.versions import library_versions
from voxtrain.vocoder import HifiGanGenerator, VocoderError, load_hifigan, load_vocoder
from voxtrain.vocoder_training.pairs import PairSet, open_pairs, pairs_signature
from voxtrain.vocoder_training.sources import (
    Acoustic,
    VocoderTrainingError,
    corpus_audio_files,
    load_acoustic,
    run_config,
    store_audio,
)

log = logging.getLogger("voxtrain.vocoder_training")


@dataclass
class VocoderOptions:
    """What one `voxtrain train-vocoder` invocation asks for."""

    checkpoint: Path  # the acoustic model (.pt or .safetensors) whose mels the vocoder learns
    features: Path
    corpus: Path
    run_dir: Path
    config: Config = field(default_factory=Config)
    until_step: int | None = None


@dataclass
class VocoderSession:
    run: RunDir
    lock: RunLock
    store: FeatureStore
    acoustic: Acoustic
    corpus: Path
    config: Config
    pairs: PairSet
    generator: HifiGanGenerator
    recorder: RunRecorder
    until_step: int | None
    resume_state: dict | None = None
    resumed_from: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.resume_state is not None:
            return f"RESUMING the vocoder fine-tune from {self.resumed_from} (step {self.resume_state['step']})"
        return f"STARTING a vocoder fine-tune on the teacher-forced mels of {self.acoustic.path}"

    def close(self) -> None:
        self.recorder.close()
        self.lock.release()


def open_session(opts: VocoderOptions) -> VocoderSession:
    """Check every input, take the run's lock, and make (or reuse) the training pairs."""
    run = RunDir(opts.run_dir)
    run.create()
    lock = RunLock(run, log.warning).acquire()
    try:
        return _open(opts, run, lock)
    except BaseException:
        lock.release()
        raise


def _open(opts: VocoderOptions, run: RunDir, lock: RunLock) -> VocoderSession:
    for stale in remove_temp_files(run.checkpoints) + remove_temp_files(run.vocoder_data):
        log.warning("removed %s left by an interrupted write", stale.name)
    store = FeatureStore(opts.features)
    audio = store_audio(store)
    acoustic = load_acoustic(opts.checkpoint, store)
    cfg = run_config(opts.config, acoustic, store)
    _check_segments(cfg)
    try:
        load_vocoder("hifigan", None, audio)  # refuses mels the bundled generator cannot render
    except VocoderError as err:
        raise VocoderTrainingError(f"train-vocoder fine-tunes the bundled HiFi-GAN, and the feature store "
                                   f"{store.root} holds mels it cannot render: {err} (for train-vocoder: prepare "
                                   f"the corpus again with those audio settings)") from None
    # Trained under weight norm, as it was made; the loaders fold it when they read the export.
    generator = load_hifigan(None, "cpu", trainable=True)
    latest = CheckpointManager(run, cfg.checkpoint, log=log.warning).load_latest()
    state, path = latest if latest is not None else (None, None)
    if state is not None:
        _check_resume(state, path, store, acoustic)
    if not store.split_indices("train"):
        raise VocoderTrainingError(f"the feature store {store.root} has no training clips: prepare a corpus with "
                                   f"more clips than data.val_size")
    pairs = open_pairs(run, store, acoustic, corpus_audio_files(opts.corpus, store), audio)
    write_text_atomic(run.config, cfg.to_yaml())
    recorder = RunRecorder(run, state["step"] if state else None, config=cfg, log=log.warning)
    session = VocoderSession(run, lock, store, acoustic, Path(opts.corpus), cfg, pairs, generator, recorder,
                             opts.until_step, state, str(path) if path else None, library_versions())
    _record_run(session)
    return session


def _check_segments(cfg: Config) -> None:
    vcfg, hop = cfg.vocoder_training, cfg.audio.hop_length
    samples = vcfg.segment_frames * hop
    need = max([cfg.audio.n_fft // 2] + [n_fft // 2 for n_fft, _, _ in vcfg.stft_resolutions])
    if samples <= need:
        raise VocoderTrainingError(
            f"vocoder_training.segment_frames {vcfg.segment_frames} makes segments of {samples} samples, too short "
            f"for the STFTs of the losses (more than {need} needed): raise segment_frames to at least "
            f"{need // hop + 1}, or drop the largest vocoder_training.stft_resolutions"
        )


def _check_resume(state: dict, path: Path, store: FeatureStore, acoustic: Acoustic) -> None:
    if state.get("mode") != "vocoder":
        raise VocoderTrainingError(f"{path} is not a vocoder fine-tune's checkpoint (mode {state.get('mode')!r}): "
                                   f"give train-vocoder a new --run")
    if state.get("pairs_signature") != pairs_signature(store, acoustic):
        raise VocoderTrainingError(
            f"cannot resume from {path}: this run was started with the acoustic checkpoint "
            f"{state.get('acoustic_checkpoint')} on the feature store {state.get('features')}, and --checkpoint "
            f"{acoustic.path} / --features {store.root} are not the same files (their content differs). Resume with "
            f"the run's own inputs, or start a new --run."
        )


def _record_run(s: VocoderSession) -> None:
    record_session(s.run, "vocoder", s.resume_state["step"] if s.resume_state else 0, s.describe(), s.versions,
                   acoustic_checkpoint={"path": str(s.acoustic.path), "sha256": s.acoustic.sha256},
                   corpus=str(s.corpus), dataset={"path": str(s.store.root), "fingerprint": s.store.fingerprint})
