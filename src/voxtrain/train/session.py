"""What a `train` invocation is: a fresh run, a resume, or a fine-tune (phase 2).

The decision is explicit and logged: a run directory with a valid checkpoint is always
resumed exactly; `--init-from` only seeds a *new* run with weights (fresh optimizer,
constant low LR, no warm-up re-run).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from voxtrain.artifacts.checkpoints import CheckpointError, CheckpointManager
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.store import FeatureStore
from voxtrain.artifacts.weights import load_weights
from voxtrain.atomic import remove_temp_files, write_json_atomic, write_text_atomic
from voxtrain.config import TRAINING_BEHAVIOUR_FIELDS, Config, config_from_dict
from voxtrain.versions import library_versions, versions_line

log = logging.getLogger("voxtrain.train")


class SessionError(RuntimeError):
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


@dataclass
class RunSession:
    config: Config
    mode: str  # "train" | "finetune"
    resume_state: dict | None = None
    resumed_from: str | None = None
    init_weights: dict[str, torch.Tensor] | None = None
    init_from: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # Checkpoints that failed to load while looking for one to resume: (step, path, why).
    corrupt_checkpoints: list[tuple[int, Path, str]] = field(default_factory=list)

    def describe(self) -> str:
        if self.resume_state is not None:
            kind = "RESUMING fine-tune" if self.mode == "finetune" else "RESUMING"
            return f"{kind} from {self.resumed_from} (step {self.resume_state['step']})"
        if self.mode == "finetune":
            t = self.config.training
            return f"FINE-TUNING from {self.init_from} (weights only; fresh optimizer; lr {t.lr:g} {t.scheduler})"
        return "STARTING a new run from step 0"

    def versions_line(self) -> str:
        return versions_line(self.versions)


def diff_dicts(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ, as 'path: old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += diff_dicts(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def finetune_config(cfg: Config) -> Config:
    """Phase-2 training settings: the finetune section's LR and schedule, no warm-up."""
    data = cfg.to_dict()
    data["training"]["lr"] = cfg.finetune.lr
    data["training"]["scheduler"] = cfg.finetune.scheduler
    if cfg.finetune.scheduler == "constant":
        data["training"]["warmup_steps"] = 0
    return config_from_dict(data, "fine-tune settings")


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


def explicit_settings(section: BaseModel, prefix: str) -> dict[str, Any]:
    """The fields of a config section that the YAML file or `--set` gave, by key path."""
    out: dict[str, Any] = {}
    for name in section.model_fields_set:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            out.update(explicit_settings(value, f"{prefix}.{name}"))
        else:
            out[f"{prefix}.{name}"] = value
    return out


def _lookup(data: dict, path: str) -> Any:
    for part in path.split(".")[1:]:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def model_from_checkpoint(cfg: Config, saved_model: dict, source: str, allow_changes: bool = False) -> Config:
    """`cfg` with the checkpoint's model architecture. An architecture setting the config
    gives explicitly and the checkpoint contradicts is an error naming it, unless
    `allow_changes` (fine-tuning with --skip-mismatched), when the config's setting wins.
    Settings that only change how the model trains (dropout, the aligner's schedule) are
    the config's to set."""
    explicit = explicit_settings(cfg.model, "model")
    behaviour = {f"model.{name}" for name in TRAINING_BEHAVIOUR_FIELDS}
    wins = {k: v for k, v in explicit.items() if k in behaviour}
    conflicts = {k: v for k, v in explicit.items() if k not in behaviour and _lookup(saved_model, k) != v}
    if conflicts and not allow_changes:
        listing = "\n  ".join(f"{k}: {v!r} in the config, {_lookup(saved_model, k)!r} in the checkpoint"
                               for k, v in conflicts.items())
        hint = ", or pass --skip-mismatched to train them freshly initialised" if source.startswith("--init") else ""
        raise SessionError(
            f"{source} was trained with another model architecture than the config asks for:\n  {listing}\n"
            f"The architecture comes from the checkpoint: remove these settings from the config (or --set){hint}."
        )
    for key, value in conflicts.items():
        log.warning("model setting %s = %r differs from the checkpoint (%r): the config wins",
                    key, value, _lookup(saved_model, key))
    data = cfg.to_dict()
    data["model"] = _with_settings(json.loads(json.dumps(saved_model)), {**wins, **conflicts})
    return config_from_dict(data, f"{source} (model section)")


def _with_settings(data: dict, settings: dict[str, Any]) -> dict:
    """Set `model.a.b`-style key paths in a model section's dict (as `_lookup` reads them)."""
    for path, value in settings.items():
        node = data
        parts = path.split(".")[1:]
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return data


def _check_compatible(cfg: Config, store: FeatureStore, state: dict, path: Path) -> None:
    saved = state["config"]
    changed = diff_dicts(saved.get("audio"), cfg.to_dict()["audio"], "audio")
    if changed:
        raise SessionError(
            f"cannot resume from {path}: the config changes the audio settings:\n  "
            + "\n  ".join(changed)
            + "\nUse the run's own config.yaml, or start a new run (--run NEW) / fine-tune with --init-from."
        )
    if state.get("symbols") != store.symbols.to_dict():
        raise SessionError(f"cannot resume from {path}: the feature store uses a different symbol table "
                           f"({_symbol_changes(state.get('symbols') or {}, store.symbols.to_dict())}); "
                           f"train on the store this run was prepared with, or start a new run")
    other = diff_dicts(saved.get("training"), cfg.to_dict()["training"], "training")
    other += diff_dicts(saved.get("model"), cfg.to_dict()["model"], "model")
    for line in other:
        log.warning("config changed since the checkpoint: %s", line)
    if state.get("dataset_fingerprint") not in (None, store.fingerprint):
        log.warning("the feature store differs from the one this run was trained on (fingerprint changed)")


def _symbol_changes(saved: dict, current: dict) -> str:
    old, new = list(saved.get("symbols", [])), list(current.get("symbols", []))
    added = [x for x in new if x not in old]
    removed = [x for x in old if x not in new]
    parts = [f"new in the store: {' '.join(added)}"] if added else []
    parts += [f"missing from the store: {' '.join(removed)}"] if removed else []
    return "; ".join(parts) or f"the same {len(new)} symbols in another order"


def prepare_session(opts: TrainOptions, store: FeatureStore, run: RunDir, write: bool = True) -> RunSession:
    """Decide fresh / resume / fine-tune, and the config the run really uses."""
    cfg = opts.config
    if write:
        run.create()
        for stale in remove_temp_files(run.checkpoints):
            log.warning("removed %s left by an interrupted save", stale.name)
    finder = CheckpointManager(run, cfg.checkpoint, log=log.warning)
    latest = finder.load_latest()
    session = RunSession(config=cfg, mode="train", versions=library_versions(), corrupt_checkpoints=finder.corrupt)
    if latest is not None:
        state, path = latest
        if opts.init_from:
            log.warning("--init-from %s ignored: %s already has checkpoints, so this RESUMES it. "
                        "Use a new --run to fine-tune.", opts.init_from, run.root)
        session.mode = state.get("mode", "train")
        base = model_from_checkpoint(cfg, state["config"]["model"], f"cannot resume: {path}")
        base = finetune_config(base) if session.mode == "finetune" else base
        _check_compatible(base, store, state, path)
        session.config, session.resume_state, session.resumed_from = base, state, str(path)
    elif opts.init_from:
        weights, meta = load_model_weights(Path(opts.init_from))
        session.mode, session.init_from = "finetune", str(opts.init_from)
        saved_model = (meta.get("config") or {}).get("model")
        base = cfg if saved_model is None else model_from_checkpoint(
            cfg, saved_model, f"--init-from {opts.init_from}", allow_changes=opts.skip_mismatched)
        session.config = finetune_config(base)
        session.init_weights = weights
    if write:
        write_text_atomic(run.config, session.config.to_yaml())
        _record_run(run, session, store)
    return session


def _record_run(run: RunDir, session: RunSession, store: FeatureStore) -> None:
    info = json.loads(run.run_info.read_text()) if run.run_info.is_file() else {}
    info.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    info.setdefault("mode", session.mode)
    if session.init_from:
        info["init_from"] = session.init_from
    info["dataset"] = {"path": str(store.root), "fingerprint": store.fingerprint}
    info["versions"] = session.versions
    info.setdefault("sessions", []).append({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "start_step": session.resume_state["step"] if session.resume_state else 0,
        "kind": session.describe(),
    })
    write_json_atomic(run.run_info, info)
