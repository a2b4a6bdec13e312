"""The config's building blocks: its error type and the strict base of every section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from voxtrain.errors import VoxtrainError


class ConfigError(VoxtrainError, ValueError):
    """A configuration file or override is invalid; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
