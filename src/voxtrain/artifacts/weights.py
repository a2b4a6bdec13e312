"""Inference weights: `NAME.safetensors` plus a `NAME.json` sidecar (config, symbols, provenance).

Both formats a model loads from, a training checkpoint (.pt) and an export, load without
pickle code: safetensors holds only tensors, and checkpoints load with weights_only=True.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxtrain.artifacts.checkpoint_format import CheckpointError, load_state
from voxtrain.artifacts.layout import export_sidecar
from voxtrain.atomic import write_atomic, write_text_atomic

if TYPE_CHECKING:
    import torch


def export_metadata(config: dict, symbols: dict, step: int | None, **provenance: Any) -> dict[str, Any]:
    """What an export's sidecar says about the weights: everything needed to rebuild the model."""
    return {"config": config, "symbols": symbols, "step": step, **provenance}


def weights_bytes(model_state: dict[str, torch.Tensor], fp16: bool = False) -> int:
    """Size of the tensors an export writes (the sidecar is negligible)."""
    return sum(v.numel() * (2 if fp16 and v.is_floating_point() else v.element_size()) for v in model_state.values())


def export_weights(model_state: dict[str, torch.Tensor], meta: dict[str, Any], out: Path, fp16: bool = False) -> Path:
    """Write safetensors weights and their JSON sidecar, each atomically."""
    from safetensors.torch import save as save_safetensors

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in model_state.items():
        v = v.detach().cpu()
        tensors[k] = (v.half() if fp16 and v.is_floating_point() else v).contiguous()
    write_atomic(save_safetensors(tensors), out)
    sidecar = dict(meta, dtype="float16" if fp16 else "float32", weights=out.name)
    write_text_atomic(export_sidecar(out), json.dumps(sidecar, indent=1))
    return out


def export_checkpoint(checkpoint: Path, out: Path, fp16: bool = False) -> Path:
    """`voxtrain export`: a training checkpoint's model as inference weights."""
    if Path(out).suffix != ".safetensors":
        raise CheckpointError(f"{out}: the export must end in .safetensors")
    state = load_state(checkpoint)
    if "model" not in state or "config" not in state or "symbols" not in state:
        raise CheckpointError(f"{checkpoint}: not a voxtrain training checkpoint (no model, config or symbols)")
    meta = export_metadata(state["config"], state["symbols"], state.get("step"))
    return export_weights(state["model"], meta, out, fp16=fp16)


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Model weights (float32) and their metadata (config, symbols, step) from a training
    checkpoint (.pt) or an inference export (.safetensors + .json sidecar)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sidecar = export_sidecar(path)
        meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
        return {k: v.float() for k, v in load_file(path).items()}, meta
    state = load_state(path)
    weights = state.get("model", state)
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise CheckpointError(f"{path}: holds no model weights (keys: {', '.join(list(state)[:8])})")
    return weights, state
