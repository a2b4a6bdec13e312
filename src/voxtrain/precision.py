"""Numeric precision: what 'auto' means on a device, and the autocast context for it."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(requested: str, device: torch.device) -> str:
    """'auto' picks the fastest precision that runs stably on the device: bf16 on CPUs with
    native bf16 (AVX512-BF16 or AMX) and on bf16-capable GPUs, fp16 on older GPUs, else fp32."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """bf16 arithmetic in hardware: AVX512-BF16 or AMX on x86, the BF16 extension on ARM.
    torch's own check (oneDNN's) also says yes on AVX512 CPUs without it, where bf16 is
    emulated and slower than fp32, so on Linux the CPU's feature flags decide."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = {word for line in f if line.lower().startswith(("flags", "features"))
                     for word in line.split(":", 1)[1].split()}
    except OSError:  # not Linux: trust oneDNN's answer
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast for a resolved precision; a no-op for fp32. Weights keep their dtype."""
    dtype = _autocast_dtype(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def _autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# Modules whose weights autocast casts to the low precision at every call (matmul and conv ops).
_AUTOCAST_CAST_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def store_weights_for_autocast(model: nn.Module, precision: str) -> nn.Module:
    """Store the Linear/Conv weights and biases of an inference model in the dtype autocast
    casts them to, once, instead of at every call: the same numbers, without re-casting
    every weight on every call (a visible share of a batch-1 utterance on CPU). Norms
    and embeddings stay fp32. From then on the model must run under autocast(precision):
    call it on a model that nothing else uses (`synthesize` does it on the model it loads;
    a Synthesizer does not, since its model may be the one in training). Memory layouts
    (channels-last conv weights) are kept. fp32 leaves the model as it is."""
    dtype = _autocast_dtype(precision)
    if dtype is None:
        return model
    for module in model.modules():
        if isinstance(module, _AUTOCAST_CAST_MODULES):
            for param in module.parameters(recurse=False):
                param.data = param.data.to(dtype)
    return model
