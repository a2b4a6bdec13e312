"""What a `train` invocation is: a fresh run, a resume, or a fine-tune (phase 2).

The decision is explicit and logged: a run directory with a valid checkpoint is always
resumed exactly; `--init-from` only seeds a *new* run with weights (fresh optimizer,
constant low LR, no warm-up re-run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from voxtrain.artifacts.checkpoint_format import CheckpointError, TrainingState
from voxtrain.artifacts.store import FeatureStore
from voxtrain.artifacts.weights import load_weights
from voxtrain.config import Config
from voxtrain.config.derive import finetune_config, model_from_checkpoint
from voxtrain.errors import VoxtrainError
from voxtrain.text.coverage import merged_clip_counts, missing_symbols
from voxtrain.text.symbols import SymbolTable

log = logging.getLogger("voxtrain.train")


class SessionError(VoxtrainError, RuntimeError):
    """The run cannot start as asked; the message says what to change."""


@dataclass
class TrainOptions:
    """What one `voxtrain train` invocation asks for."""

    run_dir: Path
    features: Path
    config: Config
    until_step: int | None = None
    init_from: Path | None = None
    skip_mismatched: bool = False
    stop_at: float | None = None  # a wall-clock deadline, time.time(): a pipeline stage's budget


@dataclass
class RunSession:
    config: Config
    mode: str  # "train" | "finetune"
    resume_state: TrainingState | None = None
    resumed_from: str | None = None
    init_weights: dict[str, torch.Tensor] | None = None
    init_from: str | None = None
    # Clips per symbol of all the data these weights have been trained on (base and fine-tunes).
    symbol_clips: dict[str, int] = field(default_factory=dict)
    # A fine-tune's base symbol table, and the symbols given fresh embedding rows.
    base_symbols: SymbolTable | None = None
    fresh_symbols: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.resume_state is not None:
            kind = "RESUMING fine-tune" if self.mode == "finetune" else "RESUMING"
            return f"{kind} from {self.resumed_from} (step {self.resume_state.step})"
        if self.mode == "finetune":
            t = self.config.training
            return f"FINE-TUNING from {self.init_from} (weights only; fresh optimizer; lr {t.lr:g} {t.scheduler})"
        return "STARTING a new run from step 0"


def diff_dicts(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ, as 'path: old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += diff_dicts(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def load_model_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        return load_weights(Path(path))
    except CheckpointError as err:
        raise SessionError(f"--init-from: {err}") from None


def match_weights(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], skip_mismatched: bool, source: str
) -> dict[str, torch.Tensor]:
    """Check a weight set against a model; name every mismatch and refuse unless allowed to skip."""
    problems = []
    for name, tensor in expected.items():
        if name not in given:
            problems.append(f"{name}: missing from {source}")
        elif tuple(given[name].shape) != tuple(tensor.shape):
            problems.append(f"{name}: shape {tuple(given[name].shape)} in {source}, model needs {tuple(tensor.shape)}")
    unexpected = [f"{name}: not in the model" for name in given if name not in expected]
    if (problems or unexpected) and not skip_mismatched:
        listing = "\n  ".join(problems + unexpected)
        raise SessionError(
            f"--init-from {source} does not match the configured model:\n  {listing}\n"
            f"Fix model settings in the config to match, or pass --skip-mismatched to keep "
            f"these tensors freshly initialised."
        )
    for line in problems + unexpected:
        log.warning("init-from: skipped %s", line)
    merged = dict(expected)
    merged.update({k: v for k, v in given.items() if k in expected and v.shape == expected[k].shape})
    return merged


def _check_compatible(cfg: Config, store: FeatureStore, state: TrainingState, path: Path) -> None:
    saved = state.config
    changed = diff_dicts(saved.get("audio"), cfg.to_dict()["audio"], "audio")
    if changed:
        raise SessionError(
            f"cannot resume from {path}: the config changes the audio settings:\n  "
            + "\n  ".join(changed)
            + "\nUse the run's own config.yaml, or start a new run (--run NEW) / fine-tune with --init-from."
        )
    if state.symbols != store.symbols.to_dict():
        raise SessionError(f"cannot resume from {path}: the feature store uses a different symbol table "
                           f"({_symbol_changes(state.symbols or {}, store.symbols.to_dict())}); "
                           f"train on the store this run was prepared with, or start a new run")
    other = diff_dicts(saved.get("training"), cfg.to_dict()["training"], "training")
    other += diff_dicts(saved.get("model"), cfg.to_dict()["model"], "model")
    for line in other:
        log.warning("config changed since the checkpoint: %s", line)
    if state.dataset_fingerprint not in (None, store.fingerprint):
        log.warning("the feature store differs from the one this run was trained on (fingerprint changed)")


def _symbol_changes(saved: dict, current: dict) -> str:
    old, new = list(saved.get("symbols", [])), list(current.get("symbols", []))
    added = [x for x in new if x not in old]
    removed = [x for x in old if x not in new]
    parts = [f"new in the store: {' '.join(added)}"] if added else []
    parts += [f"missing from the store: {' '.join(removed)}"] if removed else []
    return "; ".join(parts) or f"the same {len(new)} symbols in another order"


def prepare_session(opts: TrainOptions, store: FeatureStore,
                    latest: tuple[TrainingState, Path] | None) -> RunSession:
    """Decide fresh / resume / fine-tune from the run's newest valid checkpoint (`latest`), and
    the config the run really uses."""
    cfg = opts.config
    session = RunSession(config=cfg, mode="train")
    if latest is not None:
        state, path = latest
        if opts.init_from:
            log.warning("--init-from %s ignored: %s already has checkpoints, so this RESUMES it. "
                        "Use a new --run to fine-tune.", opts.init_from, opts.run_dir)
        session.mode = state.mode
        base = model_from_checkpoint(cfg, state.config["model"], f"cannot resume: {path}")
        base = finetune_config(base) if session.mode == "finetune" else base
        _check_compatible(base, store, state, path)
        session.config, session.resume_state, session.resumed_from = base, state, str(path)
        session.symbol_clips = state.facts.get("symbol_clips") or store.symbol_clips("train")
    elif opts.init_from:
        weights, meta = load_model_weights(Path(opts.init_from))
        session.mode, session.init_from = "finetune", str(opts.init_from)
        saved_model = (meta.get("config") or {}).get("model")
        base = cfg if saved_model is None else model_from_checkpoint(
            cfg, saved_model, f"--init-from {opts.init_from}", allow_changes=opts.skip_mismatched)
        session.config = finetune_config(base)
        session.init_weights = weights
        session.base_symbols, session.fresh_symbols = plan_symbols(meta, store, session.config, opts.init_from)
        session.symbol_clips = merged_clip_counts(meta.get("symbol_clips"), store.symbol_clips("train"))
        log_speaker_shift(meta.get("speaker_stats"), store.stats)
    else:
        session.symbol_clips = store.symbol_clips("train")
    return session


def plan_symbols(meta: dict, store: FeatureStore, cfg: Config, source: Path | str) -> tuple[SymbolTable, list[str]]:
    """The base's symbol table, and the symbols of the new data that will get fresh embedding
    rows; refused (naming each) unless `finetune.new_symbols` allows them."""
    base_table = SymbolTable.from_dict(meta["symbols"]) if meta.get("symbols") else store.symbols
    missing = missing_symbols(base_table, meta.get("symbol_clips"), store.symbol_clips("train"))
    if missing and not cfg.finetune.new_symbols:
        listing = "\n  ".join(m.describe() for m in missing)
        raise SessionError(
            f"the new data in {store.root} uses {len(missing)} symbol(s) the base {source} never learned:\n"
            f"  {listing}\nPass --new-symbols (finetune.new_symbols: true) to give them fresh embedding rows "
            f"(the shared symbols keep theirs), or remove those clips from the corpus."
        )
    fresh = [m.symbol for m in missing] + [s for s in store.symbols.symbols if s not in base_table.symbols]
    fresh = list(dict.fromkeys(fresh))
    if missing:
        log.warning("fine-tune: fresh embedding rows for %s; every other symbol keeps the base's row",
                    " ".join(repr(m.symbol) for m in missing))
    return base_table, fresh


def log_speaker_shift(base_stats: dict | None, new_stats: dict) -> None:
    """Say what the new speaker's statistics are; the model sees pitch and energy only
    normalized by the data it trains on, so the new statistics replace the base's."""
    if not base_stats:
        log.info("fine-tune: pitch and energy are normalized with the new data's statistics "
                 "(F0 %.0f Hz +- %.0f)", new_stats["pitch_mean"], new_stats["pitch_std"])
        return
    log.info("fine-tune: pitch and energy are normalized with the new data's statistics: F0 %.0f Hz +- %.0f "
             "(base %.0f Hz +- %.0f), energy %.1f +- %.1f (base %.1f +- %.1f)",
             new_stats["pitch_mean"], new_stats["pitch_std"], base_stats["pitch_mean"], base_stats["pitch_std"],
             new_stats["energy_mean"], new_stats["energy_std"], base_stats["energy_mean"], base_stats["energy_std"])
