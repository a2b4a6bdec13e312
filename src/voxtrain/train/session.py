"""What a `train` invocation is: a fresh run, a resume, or a fine-tune (phase 2).

The decision is explicit and logged: a run directory with a valid checkpoint is always
resumed exactly; `--init-from` only seeds a *new* run with weights (fresh optimizer,
constant low LR, no warm-up re-run).
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import voxtrain
from voxtrain.atomic import write_atomic
from voxtrain.config import Config, config_from_dict
from voxtrain.data.store import FeatureStore
from voxtrain.ops.rundir import RunDir
from voxtrain.train.checkpoints import CheckpointError, CheckpointManager, load_weights

log = logging.getLogger("voxtrain.train")


class SessionError(RuntimeError):
    """The run cannot start as asked; the message says what to change."""


@dataclass
class RunSession:
    config: Config
    mode: str  # "train" | "finetune"
    resume_state: dict | None = None
    resumed_from: str | None = None
    init_weights: dict[str, torch.Tensor] | None = None
    init_from: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.resume_state is not None:
            kind = "RESUMING fine-tune" if self.mode == "finetune" else "RESUMING"
            return f"{kind} from {self.resumed_from} (step {self.resume_state['step']})"
        if self.mode == "finetune":
            t = self.config.training
            return f"FINE-TUNING from {self.init_from} (weights only; fresh optimizer; lr {t.lr:g} {t.scheduler})"
        return "STARTING a new run from step 0"

    def versions_line(self) -> str:
        return " ".join(f"{k} {v}" for k, v in self.versions.items())


def _versions() -> dict[str, str]:
    import accelerate

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading refuses.
    return {"voxtrain": str(voxtrain.__version__), "torch": str(torch.__version__),
            "accelerate": str(accelerate.__version__), "python": platform.python_version()}


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


def _check_compatible(saved: dict, cfg: Config, store: FeatureStore, state: dict, path: Path) -> None:
    changed = diff_dicts(saved.get("model"), cfg.to_dict()["model"], "model")
    changed += diff_dicts(saved.get("audio"), cfg.to_dict()["audio"], "audio")
    if changed:
        raise SessionError(
            f"cannot resume from {path}: the config changes the model or audio settings:\n  "
            + "\n  ".join(changed)
            + "\nUse the run's own config.yaml, or start a new run (--run NEW) / fine-tune with --init-from."
        )
    if state.get("symbols") != store.symbols.to_dict():
        raise SessionError(f"cannot resume from {path}: the feature store uses a different symbol table")
    other = diff_dicts(saved.get("training"), cfg.to_dict()["training"], "training")
    for line in other:
        log.warning("config changed since the checkpoint: %s", line)
    if state.get("dataset_fingerprint") not in (None, store.fingerprint):
        log.warning("the feature store differs from the one this run was trained on (fingerprint changed)")


def prepare_session(opts: Any, store: FeatureStore, run: RunDir, write: bool = True) -> RunSession:
    cfg: Config = opts.config
    if write:
        run.create()
        for stale in run.checkpoints.glob(".ckpt-*.tmp*"):
            log.warning("removing %s left by an interrupted save", stale.name)
            stale.unlink(missing_ok=True)
    latest = CheckpointManager(run, cfg.checkpoint, log=log.warning).load_latest()
    session = RunSession(config=cfg, mode="train", versions=_versions())
    if latest is not None:
        state, path = latest
        if opts.init_from:
            log.warning("--init-from %s ignored: %s already has checkpoints, so this RESUMES it. "
                        "Use a new --run to fine-tune.", opts.init_from, run.root)
        session.mode = state.get("mode", "train")
        base = finetune_config(cfg) if session.mode == "finetune" else cfg
        _check_compatible(state["config"], base, store, state, path)
        session.config, session.resume_state, session.resumed_from = base, state, str(path)
    elif opts.init_from:
        weights, _ = load_model_weights(Path(opts.init_from))
        session.mode, session.init_from = "finetune", str(opts.init_from)
        session.config = finetune_config(cfg)
        session.init_weights = weights
    if write:
        run.config.write_text(session.config.to_yaml(), encoding="utf-8")
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
    write_atomic(json.dumps(info, indent=1).encode(), run.run_info)
