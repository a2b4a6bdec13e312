"""Typed configuration: every default of voxtrain lives here.

A run is described by one YAML file validated by these pydantic models. Unknown keys,
wrong types and out-of-range values fail at load time with a message naming the key
path, the bad value and what is allowed, so a typo never costs two days of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from voxtrain.config.base import ConfigError, _Section
from voxtrain.config.scoring import (
    EarlyStopConfig,
    EvaluationConfig,
    TargetSpec,
    metric_direction,
    metric_scorer,
)
from voxtrain.config.sections import (
    TRAINING_BEHAVIOUR_FIELDS,
    AdversarialConfig,
    AlignerConfig,
    AudioConfig,
    CheckpointConfig,
    DataConfig,
    FinetuneConfig,
    LossWeights,
    ModelConfig,
    TextConfig,
    TrainingConfig,
)
from voxtrain.config.vocoder import VocoderTrainingConfig

__all__ = [
    "TRAINING_BEHAVIOUR_FIELDS", "AdversarialConfig", "AlignerConfig", "AudioConfig", "CheckpointConfig", "Config",
    "ConfigError", "DataConfig", "EarlyStopConfig", "EvaluationConfig", "FinetuneConfig", "LossWeights",
    "ModelConfig", "TargetSpec", "TextConfig", "TrainingConfig", "VocoderTrainingConfig", "apply_overrides",
    "config_from_dict", "load_config", "metric_direction", "metric_scorer",
]


class Config(_Section):
    audio: AudioConfig = Field(default_factory=AudioConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    vocoder_training: VocoderTrainingConfig = Field(default_factory=VocoderTrainingConfig)

    @model_validator(mode="after")
    def _check_metrics(self) -> Config:
        """Every metric a target, the early stop or best_by names is one this run logs."""
        named = [(f"training.targets.{m}", m) for m in self.training.targets]
        if self.training.early_stop is not None:
            named.append(("training.early_stop.metric", self.training.early_stop.metric))
        named.append(("checkpoint.best_by", self.checkpoint.best_by))
        for where, metric in named:
            try:
                metric_direction(metric)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            if not self.evaluation.logs(metric):
                why = "evaluation.enabled is false" if not self.evaluation.enabled else (
                    f"evaluation.scorers ({', '.join(self.evaluation.scorers) or 'none'}) lacks "
                    f"{metric_scorer(metric) or 'every scorer'}")
                raise ValueError(f"{where}: {metric} is never logged by this run ({why})")
        every = self.evaluation.every
        if every is not None and every % self.training.validate_every:
            raise ValueError(f"evaluation.every ({every}) must be a multiple of training.validate_every "
                             f"({self.training.validate_every}): scores are measured at validations")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden":
            parent = e["loc"][:-1]
            allowed = _allowed_keys(parent)
            msg = f"unknown key; allowed keys here: {', '.join(allowed)}"
        else:
            msg = e["msg"]
            if kind == "value_error":
                msg = msg.removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if kind == "extra_forbidden" else f" (got {value!r})"
        if isinstance(value, dict):
            shown = ""
        lines.append(f"  {path}: {msg}{shown}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return sorted(model.model_fields)


def _parse_scalar(text: str) -> Any:
    """Overrides are parsed as YAML scalars so `--set training.lr=2e-4` is a float."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a raw config dict (before validation)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key path")
        node = data
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(value)
    return data


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when path is None) and apply `--set` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
        source += " with --set " + " ".join(overrides)
    return config_from_dict(data, source)
