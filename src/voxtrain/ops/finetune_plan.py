"""A fine-tune's plan from its data: how much audio, how many steps an epoch is, what budget,
LR and cadence to use for the acoustic model and the vocoder, which symbols are new, and
what the checkpoints will take on disk. Pre-flight shows it as rows of its table.

The recommendations come from measured fine-tunes of the demo voice at the default
`finetune.lr` (bench/finetune.py, bench/results/stop_runs/): on 280 clips the validation loss stopped
improving (early stop, min_delta 0.01) after 47 epochs, and on 20 clips the speaker similarity
was still rising slowly at 300 steps (150 epochs) while naturalness had levelled off by 75.
So: `EPOCHS_TO_PLATEAU` epochs, never fewer than `MIN_STEPS` steps nor more than `MAX_STEPS`.
The vocoder (train-vocoder at its lr 1e-4): on 20 clips (one minute) OVRL rose over its first
300 steps (+0.07, +0.16, +0.30 after 100, 200, 300) and levelled after; on 100 clips the first
100 steps added +0.26 with the validation mel error still falling. So the budget grows with the
audio, `VOCODER_STEPS_PER_MINUTE` steps per minute, from a floor of 100 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from voxtrain.artifacts.store import FeatureStore
from voxtrain.config import Config, FinetuneConfig
from voxtrain.text.coverage import missing_symbols
from voxtrain.text.symbols import SymbolTable

# Measured by bench/finetune.py; see the module docstring.
EPOCHS_TO_PLATEAU = 40
MIN_STEPS, MAX_STEPS = 300, 3000
VOCODER_STEPS_PER_MINUTE = 300
MIN_VOCODER_STEPS, MAX_VOCODER_STEPS = 100, 1000
# Fewer validation clips than this make each listening score too noisy to pick a checkpoint by.
MIN_SCORED_VAL_CLIPS = 4


@dataclass(frozen=True)
class PlanRow:
    name: str
    status: str  # "pass" | "warn" | "fail", as pre-flight's checks
    detail: str


@dataclass(frozen=True)
class FinetuneBudget:
    acoustic_steps: int
    lr: float
    validate_every: int
    vocoder_steps: int

    def describe(self) -> str:
        return (f"acoustic model: {self.acoustic_steps} steps at constant lr {self.lr:g}, validate every "
                f"{self.validate_every}; vocoder (train-vocoder): {self.vocoder_steps} steps")


def recommend_budget(train_clips: int, batch: int, train_minutes: float) -> FinetuneBudget:
    """Steps for a fine-tune to plateau on this much data, by the bench's measurements."""
    steps_per_epoch = max(1, math.ceil(train_clips / max(batch, 1)))
    steps = min(max(EPOCHS_TO_PLATEAU * steps_per_epoch, MIN_STEPS), MAX_STEPS)
    # About ten evaluations over the budget: enough points for the forecast and the early stop.
    validate_every = max(25, int(round(steps / 10 / 25)) * 25)
    vocoder = min(max(int(VOCODER_STEPS_PER_MINUTE * train_minutes), MIN_VOCODER_STEPS), MAX_VOCODER_STEPS)
    # The LR the measurements were made at is the config's default, defined there.
    return FinetuneBudget(int(math.ceil(steps / validate_every) * validate_every), FinetuneConfig().lr,
                          validate_every, vocoder)


def split_minutes(store: FeatureStore, split: str) -> float:
    """Minutes of audio in one split of a store."""
    return sum(float(store.records[i]["seconds"]) for i in store.split_indices(split)) / 60


def plan_rows(cfg: Config, store: FeatureStore, base_meta: dict, source: Path) -> list[PlanRow]:
    """The rows pre-flight adds for a fine-tune from `source` (its metadata `base_meta`)."""
    n_train, n_val = len(store.split_indices("train")), len(store.split_indices("val"))
    train_min = split_minutes(store, "train")
    t = cfg.training
    per_step = t.batch_size * t.grad_accum
    steps_per_epoch = max(1, math.ceil(n_train / per_step))
    rows = [PlanRow("fine-tune data", "pass", f"{n_train} train clips ({train_min:.1f} min), {n_val} validation "
                    f"clips ({split_minutes(store, 'val'):.1f} min)")]
    if per_step > n_train:
        rows.append(PlanRow("steps/epoch", "warn", f"one optimizer step ({t.batch_size} x {t.grad_accum} clips) "
                            f"covers more than the {n_train} train clips: every step repeats clips; lower "
                            f"training.batch_size to at most {n_train}"))
    else:
        rows.append(PlanRow("steps/epoch", "pass", f"{steps_per_epoch} steps per epoch at {per_step} clips a step; "
                            f"max_steps {t.max_steps} = {t.max_steps / steps_per_epoch:.0f} epochs"))
    budget = recommend_budget(n_train, per_step, train_min)
    rows.append(PlanRow("budget", "pass", f"recommended {budget.describe()}; this config: {t.max_steps} steps "
                        f"at lr {t.lr:g}, validate every {t.validate_every}"))
    if cfg.finetune.freeze:
        rows.append(PlanRow("freeze", "pass", _freeze_summary(cfg, len(store.symbols))))
    rows.append(_symbol_row(cfg, store, base_meta, source))
    rows.append(_speaker_row(store, base_meta))
    if n_val < MIN_SCORED_VAL_CLIPS or n_val < min(cfg.evaluation.reference_clips, 8):
        rows.append(PlanRow("validation", "warn", f"only {n_val} validation clips: the speaker reference and "
                            f"val_mel are noisy; raise data.val_size to {max(MIN_SCORED_VAL_CLIPS, 8)} or more "
                            f"if the corpus allows"))
    return rows


def _freeze_summary(cfg: Config, n_symbols: int) -> str:
    import torch

    from voxtrain.model import FastSpeech2
    from voxtrain.model.parts import freeze_parts

    with torch.device("meta"):
        model = FastSpeech2(cfg.model, n_symbols, cfg.audio.n_mels)
    return freeze_parts(model, cfg.finetune.freeze).describe()


def _symbol_row(cfg: Config, store: FeatureStore, base_meta: dict, source: Path) -> PlanRow:
    base_table = SymbolTable.from_dict(base_meta["symbols"]) if base_meta.get("symbols") else store.symbols
    missing = missing_symbols(base_table, base_meta.get("symbol_clips"), store.symbol_clips("train"))
    if not missing:
        known = "" if base_meta.get("symbol_clips") else " (the base did not record its data's symbols: table only)"
        return PlanRow("symbols", "pass", f"every symbol of the new data is in the base {source.name}{known}")
    listing = "; ".join(m.describe() for m in missing[:8]) + (" ..." if len(missing) > 8 else "")
    if cfg.finetune.new_symbols:
        return PlanRow("symbols", "warn", f"{len(missing)} new symbol(s) get fresh embedding rows: {listing}")
    return PlanRow("symbols", "fail", f"{len(missing)} symbol(s) the base never learned: {listing}. Pass "
                   f"--new-symbols to give them fresh rows, or remove those clips")


def _speaker_row(store: FeatureStore, base_meta: dict) -> PlanRow:
    new = store.stats
    base = base_meta.get("speaker_stats") or {}
    against = f" (base {base['pitch_mean']:.0f} Hz)" if "pitch_mean" in base else ""
    return PlanRow("speaker", "pass", f"new data's F0 {new['pitch_mean']:.0f} +- {new['pitch_std']:.0f} Hz{against}; "
                   f"pitch and energy are normalized with the new data's own statistics")
