"""What a `train-vocoder` invocation is made from, checked before any work: the store, the
acoustic checkpoint, the corpus, and (for a resume) the run's own inputs.

A run directory with a valid checkpoint is resumed, and only with the inputs it started
from (the same feature store content and acoustic checkpoint bytes): other inputs would
change the training pairs under the optimizer's feet, so they are refused, not mixed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtrain.artifacts.checkpoint_format import TrainingState
from voxtrain.artifacts.store import FeatureStore
from voxtrain.atomic import remove_temp_files
from voxtrain.config import Config
from voxtrain.inference.loader import AcousticModel
from voxtrain.train.task import RunContext
from voxtrain.vocoder import HifiGanGenerator, VocoderError, load_hifigan, load_vocoder
from voxtrain.vocoder_training.pairs import PairSet, open_pairs, pairs_signature
from voxtrain.vocoder_training.sources import (
    VocoderTrainingError,
    check_segments,
    corpus_audio_files,
    load_acoustic,
    run_config,
    store_audio,
)
from voxtrain.vocoder_training.start import StartChoice, choose_start

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
    stop_at: float | None = None  # a wall-clock deadline, time.time(): a pipeline stage's budget


@dataclass
class VocoderInputs:
    """Every input of a vocoder fine-tune, checked against the others."""

    store: FeatureStore
    acoustic: AcousticModel
    corpus: Path
    config: Config
    pairs: PairSet
    generator: HifiGanGenerator
    start: StartChoice

    def describe(self, ctx: RunContext) -> str:
        if ctx.latest is not None:
            state, path = ctx.latest
            return f"RESUMING the vocoder fine-tune from {path} (step {state.step})"
        return f"STARTING a vocoder fine-tune on the teacher-forced mels of {self.acoustic.path}"

    def checkpoint_facts(self) -> dict[str, Any]:
        return {"acoustic_checkpoint": str(self.acoustic.path), "corpus": str(self.corpus),
                "features": str(self.store.root), "pairs_signature": self.pairs.signature,
                "start_generator": self.start.name, "joint": self.config.vocoder_training.joint}

    def run_facts(self) -> dict[str, Any]:
        return {"acoustic_checkpoint": {"path": str(self.acoustic.path), "sha256": self.acoustic.sha256},
                "corpus": str(self.corpus),
                "dataset": {"path": str(self.store.root), "fingerprint": self.store.fingerprint},
                "start_generator": {"name": self.start.name, "why": self.start.why, "scores": self.start.scores}}


def open_inputs(opts: VocoderOptions, ctx: RunContext) -> VocoderInputs:
    """Check every input and make (or reuse) the training pairs; a resume only with the
    inputs the run started from."""
    if ctx.is_main:
        for stale in remove_temp_files(ctx.run.vocoder_data):
            log.warning("removed %s left by an interrupted write", stale.name)
    store = FeatureStore(opts.features)
    audio = store_audio(store)
    acoustic = load_acoustic(opts.checkpoint, store)
    cfg = run_config(opts.config, acoustic, store)
    check_segments(cfg)
    try:
        load_vocoder("hifigan", None, audio)  # refuses mels the bundled generator cannot render
    except VocoderError as err:
        raise VocoderTrainingError(f"train-vocoder fine-tunes the bundled HiFi-GAN, and the feature store "
                                   f"{store.root} holds mels it cannot render: {err} (for train-vocoder: prepare "
                                   f"the corpus again with those audio settings)") from None
    if ctx.latest is not None:
        _check_resume(*ctx.latest, store, acoustic, cfg.vocoder_training.joint)
        # Checkpoints from before the choice existed started from LJSpeech.
        start = StartChoice(ctx.latest[0].facts.get("start_generator", "ljspeech"), "the run's own start")
    else:
        start = choose_start(store, cfg)
        log.info("starting generator %s", start.describe())
    cfg = cfg.model_copy(update={"vocoder_training": cfg.vocoder_training.model_copy(update={"start": start.name})})
    # Trained under weight norm, as it was made; the loaders fold it when they read the export.
    generator = load_hifigan(None, "cpu", trainable=True, bundled=start.name)
    if not store.split_indices("train"):
        raise VocoderTrainingError(f"the feature store {store.root} has no training clips: prepare a corpus with "
                                   f"more clips than data.val_size")
    files = corpus_audio_files(opts.corpus, store)
    # Rank 0 makes the pairs; the other ranks then read what it wrote.
    if not ctx.is_main:
        ctx.accelerator.wait_for_everyone()
    pairs = open_pairs(ctx.run, store, acoustic, files, audio)
    if ctx.is_main:
        ctx.accelerator.wait_for_everyone()
    return VocoderInputs(store, acoustic, Path(opts.corpus), cfg, pairs, generator, start)


def _check_resume(state: TrainingState, path: Path, store: FeatureStore, acoustic: AcousticModel,
                  joint: bool) -> None:
    if state.mode != "vocoder":
        raise VocoderTrainingError(f"{path} is not a vocoder fine-tune's checkpoint (mode {state.mode!r}): "
                                   f"give train-vocoder a new --run")
    if state.facts.get("pairs_signature") != pairs_signature(store, acoustic):
        raise VocoderTrainingError(
            f"cannot resume from {path}: this run was started with the acoustic checkpoint "
            f"{state.facts.get('acoustic_checkpoint')} on the feature store {state.facts.get('features')}, and "
            f"--checkpoint {acoustic.path} / --features {store.root} are not the same files (their content "
            f"differs). Resume with the run's own inputs, or start a new --run."
        )
    if bool(state.facts.get("joint", False)) != joint:
        trained = "with" if state.facts.get("joint") else "without"
        raise VocoderTrainingError(
            f"cannot resume from {path}: the run trained {trained} the acoustic model (vocoder_training.joint), "
            f"and this config sets joint {str(joint).lower()}: resume with the run's own setting, or start a new --run."
        )
