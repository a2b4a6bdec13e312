"""The one voice loader: a training checkpoint (.pt) or an inference export (.safetensors +
.json sidecar) as the FastSpeech2 model, its config, its symbol table and the facts the file
records about the voice, including the HiFi-GAN generator a `train-vocoder` voice names.

Synthesis, listening, the ONNX exporter and the vocoder fine-tune all load voices here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from voxtrain.artifacts.layout import export_sidecar
from voxtrain.config import Config, config_from_dict
from voxtrain.inference.errors import SynthError
from voxtrain.model import FastSpeech2
from voxtrain.text import SymbolTable

# The metadata that describes the voice; a training checkpoint also holds optimizer state and
# RNGs, which an inference export must not carry on.
VOICE_META = ("config", "symbols", "step", "val_mel_loss", "scores", "symbol_clips", "speaker_stats")


@dataclass
class AcousticModel:
    """An acoustic model ready to speak: loaded from a file by load_acoustic_model, or wrapped
    around a model in memory (training's samples, listening's untrained floor)."""

    model: FastSpeech2
    config: Config
    symbols: SymbolTable
    step: int | None = None
    # A voice exported by `train-vocoder` names its fine-tuned generator, meant to lie beside
    # it; checked when a voice is built on it (vocoder_choice), not at load.
    vocoder_path: Path | None = None
    path: Path | None = None
    meta: dict = field(default_factory=dict)  # VOICE_META keys the file holds

    @cached_property
    def sha256(self) -> str:
        """The loaded file's SHA-256 (what a vocoder fine-tune's pairs are keyed by)."""
        from voxtrain.artifacts.store import file_sha256

        if self.path is None:
            raise SynthError("a model in memory has no file to hash")
        return file_sha256(self.path)


def load_acoustic_model(path: str | Path, device: str | torch.device = "cpu") -> AcousticModel:
    """The model of a training checkpoint (.pt) or an inference export (.safetensors + .json),
    on `device`, in eval mode with gradients off. SynthError says why a file cannot be used."""
    from voxtrain.artifacts.checkpoint_format import CheckpointError
    from voxtrain.artifacts.weights import load_weights

    path = Path(path)
    try:
        weights, meta = load_weights(path)
    except CheckpointError as err:
        raise SynthError(str(err)) from None
    if "config" not in meta or "symbols" not in meta:
        raise SynthError(f"{path}: config and symbols are missing (a .safetensors export needs its .json sidecar)")
    config = config_from_dict(meta["config"], f"{path} (embedded config)")
    symbols = SymbolTable.from_dict(meta["symbols"])
    model = FastSpeech2(config.model, len(symbols), config.audio.n_mels)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise SynthError(f"{path} does not hold a FastSpeech2 acoustic model matching its own config ({first}); "
                         "pass a `voxtrain train` checkpoint or export") from None
    model.to(device).eval().requires_grad_(False)
    name = meta.get("vocoder")
    return AcousticModel(model, config, symbols, meta.get("step"),
                         path.with_name(name) if isinstance(name, str) else None, path,
                         {k: meta[k] for k in VOICE_META if k in meta})


def vocoder_choice(acoustic: AcousticModel, vocoder: str, vocoder_path: str | Path | None) -> Path | None:
    """The HiFi-GAN generator file a voice uses: the one given, else the one its sidecar names
    (which must be there), else None (the bundled one). None for other vocoders."""
    if vocoder != "hifigan":
        return None if vocoder_path is None else Path(vocoder_path)
    if vocoder_path is not None:
        return Path(vocoder_path)
    generator = acoustic.vocoder_path
    if generator is not None and not generator.is_file():
        voice = acoustic.path or generator
        raise SynthError(f"{voice}: its sidecar {export_sidecar(voice).name} names the vocoder {generator.name}, "
                         f"which is not beside it: copy {generator.name} next to {voice.name}, or pass --vocoder-path")
    return generator
