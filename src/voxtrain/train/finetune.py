"""What a fine-tune does to the model before its first step: the base's weights (embedding
rows remapped by symbol), and the parts it keeps frozen."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from voxtrain.artifacts.store import FeatureStore
from voxtrain.model import FastSpeech2
from voxtrain.model.parts import EMBEDDING_WEIGHT, FreezeSummary, freeze_parts, remap_embedding
from voxtrain.train.session import RunSession, match_weights

log = logging.getLogger("voxtrain.train")

SPEAKER_STATS = ("pitch_mean", "pitch_std", "energy_mean", "energy_std")


def load_base_weights(model: FastSpeech2, session: RunSession, store: FeatureStore, skip_mismatched: bool) -> None:
    """Load the --init-from weights into `model`. The embedding follows the store's symbol
    table: rows move by symbol, and symbols the base never learned keep the fresh model's row."""
    weights = dict(session.init_weights or {})
    base_table = session.base_symbols
    if base_table is not None and EMBEDDING_WEIGHT in weights and (
            base_table != store.symbols or session.fresh_symbols):
        weights[EMBEDDING_WEIGHT], fresh = remap_embedding(
            weights[EMBEDDING_WEIGHT], base_table, store.symbols, model.state_dict()[EMBEDDING_WEIGHT],
            set(session.fresh_symbols))
        if base_table != store.symbols:
            log.warning("fine-tune: the store's symbol table differs from the base's; embedding rows were "
                        "moved by symbol (%d fresh: %s)", len(fresh), " ".join(map(repr, fresh[:20])))
    model.load_state_dict(match_weights(model.state_dict(), weights, skip_mismatched, session.init_from or ""))


def freeze_for_finetune(model: FastSpeech2, session: RunSession) -> FreezeSummary:
    """Freeze the parts `finetune.freeze` names (fine-tunes only) and say how many parameters train."""
    parts = session.config.finetune.freeze if session.mode == "finetune" else []
    summary = freeze_parts(model, parts)
    if parts:
        log.info("fine-tune: %s", summary.describe())
    return summary


def start_critic_from_base(critic: torch.nn.Module, base: Path) -> None:
    """A fine-tune's mel critic starts from the base run's when the base is a training
    checkpoint (.pt) that trained one of the same shape: a critic that already knows real mels
    from generated ones. Otherwise it starts fresh, and the log says why."""
    from voxtrain.artifacts.checkpoint_format import CheckpointError, TrainingState, load_state

    fresh = "the mel critic starts fresh (training.adversarial.warmup_steps apply)"
    if base.suffix != ".pt":
        log.info("%s: %s is an export, which holds no critic; --init-from the base run's .pt checkpoint starts "
                 "from its critic", fresh, base.name)
        return
    try:
        saved = TrainingState.from_dict(load_state(base), base).critics.get("critic")
    except CheckpointError as err:
        log.warning("%s: %s", fresh, err)
        return
    if saved is None:
        log.info("%s: the base %s trained without one", fresh, base.name)
        return
    try:
        critic.load_state_dict(saved)
    except RuntimeError as err:
        log.warning("%s: the base's critic has other settings (%s)", fresh, str(err).splitlines()[0])
        return
    log.info("mel critic started from the base's, in %s", base)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def voice_facts(session: RunSession, store: FeatureStore) -> dict:
    """What a checkpoint or export records about the data behind its weights: the symbols
    they learned (so a later fine-tune can tell which rows are trained) and the speaker's
    pitch and energy statistics."""
    return {
        "symbol_clips": session.symbol_clips,
        "speaker_stats": {k: float(store.stats[k]) for k in SPEAKER_STATS if k in store.stats},
    }
