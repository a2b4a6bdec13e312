"""What every listening scorer shares: the missing-extra error, finding a model file inside
an installed package without running it, and the 16 kHz resampling. The score names, their
scorers and directions are `voxtrain.metrics`'."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

from voxtrain.errors import VoxtrainError

# Every scorer's models were trained on 16 kHz audio.
SCORER_RATE = 16000
INSTALL_HINT = "pip install 'voxtrain[eval]'"
EVAL_EXTRA = f"install the eval extra: {INSTALL_HINT}"


class ListeningUnavailable(VoxtrainError, RuntimeError):
    """A listening scorer cannot run because a package of the `eval` extra is missing."""


def require(module: str, scorer: str) -> ModuleType:
    """Import `module` for `scorer`, or ListeningUnavailable naming both and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ListeningUnavailable(
            f"the {scorer} scorer needs the Python module {module!r} ({err}); install the eval extra: {INSTALL_HINT}"
        ) from None


def check_installed(module: str, scorer: str, install: str = EVAL_EXTRA) -> None:
    """Like `require`, but only finds the module (its code does not run, nothing is loaded).
    install: how to get it, for the error (a package outside the eval extra says its own)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ListeningUnavailable(
            f"the {scorer} scorer needs the Python module {module!r}, which is not installed; {install}"
        )


def package_file(package: str, relative: str, scorer: str, install: str = EVAL_EXTRA) -> Path:
    """A data file shipped inside an installed package, found without importing the package
    (find_spec of a top-level name reads no code of it)."""
    check_installed(package, scorer, install)
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise ListeningUnavailable(
        f"the {scorer} scorer needs {relative} inside the installed package {package!r}, and it is missing; "
        + ("reinstall the eval extra: pip install --force-reinstall 'voxtrain[eval]'" if install == EVAL_EXTRA
           else f"reinstall it with --force-reinstall; {install}")
    )


def to_scorer_rate(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz, clipped to [-1, 1] (synthesis can overshoot a little)."""
    import soxr

    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"a clip must be a 1-D mono waveform, got shape {wav.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if not np.isfinite(wav).all():
        raise ValueError(f"a clip has {int((~np.isfinite(wav)).sum())} NaN/Inf samples")
    if sample_rate != SCORER_RATE and len(wav):
        wav = soxr.resample(wav, sample_rate, SCORER_RATE, quality="HQ").astype(np.float32)
    return np.clip(wav, -1.0, 1.0)
