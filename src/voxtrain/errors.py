"""The base of every error voxtrain raises on purpose.

Each package keeps its own error class (ConfigError, StoreError, SynthError, ...) and derives
it from `VoxtrainError`, so a caller that only needs "voxtrain refused, and says why" catches
one class: the CLI turns any of them into `error: <message>` and exit 1 in one place
(`voxtrain.cli.common`). The message is written for the user: what is wrong, with which file
or option, and what to do. A class may keep ValueError or RuntimeError as a second base where
callers catch those.
"""

from __future__ import annotations


class VoxtrainError(Exception):
    """A failure voxtrain expected and explains in its message (no traceback needed)."""


__all__ = ["VoxtrainError"]
