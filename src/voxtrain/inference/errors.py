"""What inference raises: one base, so a caller catches every refusal of synthesis at once."""

from __future__ import annotations

from voxtrain.errors import VoxtrainError


class SynthError(VoxtrainError, ValueError):
    """Synthesis cannot proceed; the message says why and what to do."""


class StreamError(SynthError):
    """Streaming settings or a streaming input that cannot work; the message says why."""


class OnnxVoiceError(SynthError):
    """An exported voice cannot be loaded or cannot speak a text; the message says why."""
