"""The versions a run records and pre-flight and the smoke test print: built in one place."""

from __future__ import annotations

import platform


def library_versions() -> dict[str, str]:
    """voxtrain, torch, accelerate and Python versions as plain strings."""
    import accelerate
    import torch

    import voxtrain

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading refuses.
    return {"voxtrain": str(voxtrain.__version__), "torch": str(torch.__version__),
            "accelerate": str(accelerate.__version__), "python": platform.python_version()}


def versions_line(versions: dict[str, str] | None = None) -> str:
    """'voxtrain 0.1.0 torch 2.13.0+cpu ...' for logs and tables."""
    return " ".join(f"{k} {v}" for k, v in (versions or library_versions()).items())
