"""voxtrain: train FastSpeech2 + HiFi-GAN voices and run the trainings like production jobs."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "synthesize", "load_config"]


def __getattr__(name: str) -> Any:
    # Lazy: `import voxtrain` must stay cheap for the CLI; torch loads only when needed.
    if name == "synthesize":
        from voxtrain.inference.entry import synthesize

        return synthesize
    if name == "load_config":
        from voxtrain.config import load_config

        return load_config
    raise AttributeError(name)
