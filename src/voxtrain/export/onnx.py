"""`voxtrain export --onnx`: a trained voice as one ONNX graph that piper plays unchanged.

The acoustic model and HiFi-GAN are traced together (export.graph.PiperGraph) with
dynamic lengths, then held to PyTorch before anything is written: onnxruntime and PyTorch
(both fp32) speak a few sentences, fed as piper feeds the graph (a pad between ids) and
as voxtrain's onnx engine does (no pads), and a voice whose audio differs beyond
PARITY_MAX_ABS is refused with the numbers. Beside VOICE.onnx, VOICE.onnx.json is piper's
voice config (export.voice_config).
"""

from __future__ import annotations

import importlib.util
import io
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from voxtrain import __version__
from voxtrain.atomic import write_atomic, write_text_atomic
from voxtrain.export.engine import OnnxVoice, OnnxVoiceError
from voxtrain.export.graph import PiperGraph
from voxtrain.export.voice_config import intersperse_pads, piper_voice_config
from voxtrain.synth import SynthError, Synthesizer, load_acoustic_model
from voxtrain.vocoder import VocoderError

# Sentences the parity check speaks: a short one, a pangram, and one with a comma and a question.
PARITY_SENTENCES = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "Is it going to rain tomorrow, or will the sun come out at last?",
)
# Both engines fp32: the same durations (so the same number of samples) and every sample
# within 1e-4 of PyTorch's (-80 dB of full scale). Correct exports measured 1.6e-6 (micro test
# model) to 5.4e-6 (default-size model); 1% off the vocoder's last conv weight measured 1.2e-3.
PARITY_MAX_ABS = 1e-4
# LayerNormalization is an ONNX op from opset 17 on; piper's onnxruntime runs 17 and newer.
OPSET = 17
INPUT_NAMES = ["input", "input_lengths", "scales"]
DYNAMIC_AXES = {
    "input": {0: "batch_size", 1: "phonemes"},
    "input_lengths": {0: "batch_size"},
    "output": {0: "batch_size", 3: "time"},
}


class ExportError(RuntimeError):
    """The voice cannot be exported, or its ONNX graph does not speak like PyTorch."""


@dataclass(frozen=True)
class ParityResult:
    """One sentence through both engines; `feed` is "piper" (pads between ids) or "voxtrain"."""

    text: str
    feed: str
    torch_samples: int
    onnx_samples: int
    max_abs: float  # largest |onnx - torch| over samples (inf when the lengths differ)
    rel_rms: float  # rms(onnx - torch) / rms(torch)

    def ok(self, tolerance: float) -> bool:
        return self.torch_samples == self.onnx_samples and self.max_abs <= tolerance


@dataclass(frozen=True)
class ParityReport:
    results: tuple[ParityResult, ...]
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(r.ok(self.tolerance) for r in self.results)

    @property
    def max_abs(self) -> float:
        return max(r.max_abs for r in self.results)

    @property
    def rel_rms(self) -> float:
        return max(r.rel_rms for r in self.results)

    def describe(self) -> str:
        lines = [f"parity onnxruntime vs PyTorch (fp32), tolerance max |diff| <= {self.tolerance:g} "
                 f"with equal lengths: worst max |diff| {self.max_abs:.3g}, worst relative rms {self.rel_rms:.3g}"]
        for r in self.results:
            if not r.ok(self.tolerance):
                lengths = "" if r.torch_samples == r.onnx_samples else (
                    f"{r.onnx_samples} samples vs PyTorch's {r.torch_samples} (other durations), ")
                lines.append(f"  FAILED {r.text!r} ({r.feed} ids): {lengths}max |diff| {r.max_abs:.3g}, "
                             f"relative rms {r.rel_rms:.3g}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"tolerance_max_abs": self.tolerance, "max_abs": self.max_abs, "rel_rms": self.rel_rms,
                "results": [asdict(r) for r in self.results]}


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    config_path: Path
    bytes: int
    export_seconds: float
    parity_seconds: float
    parity: ParityReport

    def describe(self) -> str:
        return (f"wrote {self.path} ({self.bytes / 2**20:.1f} MB) and {self.config_path.name} in "
                f"{self.export_seconds:.1f} s (+ {self.parity_seconds:.1f} s parity check)\n{self.parity.describe()}")


def _compare(text: str, feed: str, want: np.ndarray, got: np.ndarray) -> ParityResult:
    if len(want) != len(got):
        return ParityResult(text, feed, len(want), len(got), float("inf"), float("inf"))
    diff = got.astype(np.float64) - want.astype(np.float64)
    rms = float(np.sqrt(np.mean(want.astype(np.float64) ** 2)))
    rel_rms = float(np.sqrt(np.mean(diff**2))) / max(rms, 1e-12)
    return ParityResult(text, feed, len(want), len(got), float(np.abs(diff).max()), rel_rms)


def check_parity(
    voice: OnnxVoice, synth: Synthesizer, texts: Sequence[str] = PARITY_SENTENCES, tolerance: float = PARITY_MAX_ABS
) -> ParityReport:
    """Each text through PyTorch (`synth`, fp32) and the ONNX graph fed as piper feeds it; the
    first text also as voxtrain's engine feeds it (the pads are dropped exactly, so once is enough)."""
    pad = synth.acoustic.symbols.pad_id
    results = []
    # allow_unknown: a symbol the table lacks becomes unk for both engines alike; parity asks no more.
    for i, (text, ids) in enumerate(zip(texts, synth.phoneme_ids(list(texts), allow_unknown=True), strict=True)):
        want = synth.waveforms([text], allow_unknown=True)[0]
        results.append(_compare(text, "piper", want, voice.run(intersperse_pads(ids, pad))))
        if i == 0:
            results.append(_compare(text, "voxtrain", want, voice.run(ids)))
    return ParityReport(tuple(results), tolerance)


def build_graph(synth: Synthesizer) -> PiperGraph:
    """The module to trace: the synthesizer's own model and HiFi-GAN generator."""
    if synth.vocoder is None or not hasattr(synth.vocoder, "generator"):
        raise ExportError("an ONNX voice needs the HiFi-GAN vocoder")
    return PiperGraph(synth.acoustic.model, synth.vocoder.generator, synth.acoustic.symbols.pad_id)


def trace_to_onnx(graph: PiperGraph, example_ids: list[int]) -> bytes:
    """The TorchScript-based exporter (dynamo=False) on one example; lengths stay dynamic."""
    ids = torch.tensor([example_ids], dtype=torch.long)
    args = (ids, torch.tensor([len(example_ids)]), torch.tensor([0.667, 1.0, 0.8]))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # Expected and harmless here: the exporter's own deprecation notice, and tracer notes on
        # branches fixed at trace time that PiperGraph does not depend on (the attention kernel
        # chosen by size computes the same numbers; a tuple of 3 unpacked from a tensor).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, args, buffer, dynamo=False, opset_version=OPSET, input_names=INPUT_NAMES,
                          output_names=["output"], dynamic_axes=DYNAMIC_AXES)
    return buffer.getvalue()


def _load(checkpoint: Path, vocoder_path: Path | None) -> Synthesizer:
    try:
        acoustic = load_acoustic_model(checkpoint)
        return Synthesizer(acoustic, "hifigan", vocoder_path, precision="fp32")
    except (SynthError, VocoderError) as err:
        raise ExportError(str(err)) from None


def export_onnx_voice(
    checkpoint: str | Path,
    out: str | Path,
    vocoder_path: str | Path | None = None,
    tolerance: float = PARITY_MAX_ABS,
    texts: Sequence[str] = PARITY_SENTENCES,
) -> OnnxExport:
    """Export `checkpoint` (.pt or .safetensors) with HiFi-GAN (`vocoder_path`, default the
    bundled LJSpeech V1) to OUT.onnx + OUT.onnx.json. Nothing is written unless the graph
    passes the parity check; ExportError names the numbers otherwise."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: an ONNX voice must end in .onnx")
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"an ONNX export needs {' and '.join(missing)}: pip install 'voxtrain[deploy]'")
    synth = _load(Path(checkpoint), None if vocoder_path is None else Path(vocoder_path))
    acoustic = synth.acoustic
    start = time.perf_counter()
    if not texts:
        raise ExportError("the parity check needs at least one text")
    example = intersperse_pads(synth.phoneme_ids([texts[0]], allow_unknown=True)[0], acoustic.symbols.pad_id)
    model_bytes = trace_to_onnx(build_graph(synth), example)
    export_seconds = time.perf_counter() - start

    provenance = {"voxtrain_version": __version__, "step": acoustic.step, "checkpoint": Path(checkpoint).name,
                  "vocoder": str(vocoder_path) if vocoder_path else "hifigan (bundled LJSpeech V1)", "opset": OPSET}
    config = piper_voice_config(acoustic.config.audio, acoustic.config.text, acoustic.symbols, provenance)
    start = time.perf_counter()
    try:
        report = check_parity(OnnxVoice(model_bytes, config), synth, texts, tolerance)
    except OnnxVoiceError as err:
        raise ExportError(f"the exported graph does not run: {err}") from None
    parity_seconds = time.perf_counter() - start
    if not report.ok:
        raise ExportError(f"refusing to write {out}: its audio differs from PyTorch's.\n{report.describe()}")

    config["voxtrain"]["parity"] = report.to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    config_path = out.with_name(out.name + ".json")
    write_atomic(model_bytes, out)
    # ensure_ascii=False keeps the IPA of the phoneme map readable, as piper's own voices do.
    write_text_atomic(config_path, json.dumps(config, ensure_ascii=False, indent=1) + "\n")
    return OnnxExport(out, config_path, len(model_bytes), export_seconds, parity_seconds, report)
