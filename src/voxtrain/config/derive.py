"""Configs derived from another: a fine-tune's settings, and a checkpoint's architecture.

Both train (which runs the result) and pre-flight (which plans it) need the very config a
run will use, so they derive it here, in one place.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel

from voxtrain.config import Config, config_from_dict
from voxtrain.config.base import ConfigError
from voxtrain.config.sections import TRAINING_BEHAVIOUR_FIELDS, ModelConfig

log = logging.getLogger("voxtrain.config")


def finetune_config(cfg: Config) -> Config:
    """Phase-2 settings: the finetune section's LR, schedule (no warm-up) and rotation."""
    data = cfg.to_dict()
    data["training"]["lr"] = cfg.finetune.lr
    data["training"]["scheduler"] = cfg.finetune.scheduler
    if cfg.finetune.scheduler == "constant":
        data["training"]["warmup_steps"] = 0
    data["checkpoint"]["keep_last"] = cfg.finetune.keep_last
    return config_from_dict(data, "fine-tune settings")


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


def _saved_setting(saved_model: dict, path: str) -> Any:
    """A checkpoint's model setting; one the checkpoint predates (no key) is the default it was built with."""
    value = _lookup(saved_model, path)
    return _lookup(ModelConfig().model_dump(), path) if value is None else value


def _with_settings(data: dict, settings: dict[str, Any]) -> dict:
    """Set `model.a.b`-style key paths in a model section's dict (as `_lookup` reads them)."""
    for path, value in settings.items():
        node = data
        parts = path.split(".")[1:]
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return data


def model_from_checkpoint(cfg: Config, saved_model: dict, source: str, allow_changes: bool = False) -> Config:
    """`cfg` with the checkpoint's model architecture. An architecture setting the config
    gives explicitly and the checkpoint contradicts is a ConfigError naming it, unless
    `allow_changes` (fine-tuning with --skip-mismatched), when the config's setting wins.
    Settings that only change how the model trains (dropout, the aligner's schedule) are
    the config's to set."""
    explicit = explicit_settings(cfg.model, "model")
    behaviour = {f"model.{name}" for name in TRAINING_BEHAVIOUR_FIELDS}
    wins = {k: v for k, v in explicit.items() if k in behaviour}
    conflicts = {k: v for k, v in explicit.items() if k not in behaviour and _saved_setting(saved_model, k) != v}
    if conflicts and not allow_changes:
        listing = "\n  ".join(f"{k}: {v!r} in the config, {_saved_setting(saved_model, k)!r} in the checkpoint"
                               for k, v in conflicts.items())
        hint = ", or pass --skip-mismatched to train them freshly initialised" if source.startswith("--init") else ""
        raise ConfigError(
            f"{source} was trained with another model architecture than the config asks for:\n  {listing}\n"
            f"The architecture comes from the checkpoint: remove these settings from the config (or --set){hint}."
        )
    for key, value in conflicts.items():
        log.warning("model setting %s = %r differs from the checkpoint (%r): the config wins",
                    key, value, _saved_setting(saved_model, key))
    data = cfg.to_dict()
    data["model"] = _with_settings(json.loads(json.dumps(saved_model)), {**wins, **conflicts})
    return config_from_dict(data, f"{source} (model section)")
