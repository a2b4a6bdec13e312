"""`voxtrain export --onnx`: a trained voice as one ONNX graph that piper plays unchanged.

The acoustic model and HiFi-GAN are traced together (export.graph.PiperGraph) with
dynamic lengths, then held to PyTorch before anything is written: onnxruntime and PyTorch
(both fp32) speak a few sentences, fed as piper feeds the graph (a pad between ids) and
as voxtrain's onnx voice does (no pads), and a voice whose audio differs beyond
PARITY_MAX_ABS is refused with the numbers. Beside VOICE.onnx, VOICE.onnx.json is piper's
voice config (inference.voice_config).

For streaming (voxtrain.inference.streaming), the acoustic half and the generator are also exported
alone, as VOICE.acoustic.onnx (ids -> mel, durations) and VOICE.vocoder.onnx (mel -> audio):
streaming runs the vocoder over mel windows, which a graph from ids to audio cannot do, and
onnxruntime computes every node of a graph whatever outputs are asked for. Piper needs only
VOICE.onnx and its .json; `--no-stream` leaves the other two out.
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
from voxtrain.errors import VoxtrainError
from voxtrain.export.graph import AcousticGraph, PiperGraph, VocoderGraph
from voxtrain.inference.errors import OnnxVoiceError
from voxtrain.inference.loader import load_acoustic_model
from voxtrain.inference.onnx_voice import OnnxVoice
from voxtrain.inference.streaming import STREAM_MAX_ABS, context_frames
from voxtrain.inference.torch_voice import Synthesizer
from voxtrain.inference.voice_config import intersperse_pads, piper_voice_config, stream_file_names

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
_IDS_AXES = {"input": {0: "batch_size", 1: "phonemes"}, "input_lengths": {0: "batch_size"},
             "durations": {0: "batch_size", 2: "phonemes"}}
DYNAMIC_AXES = {**_IDS_AXES, "output": {0: "batch_size", 3: "time"}}
ACOUSTIC_AXES = {**_IDS_AXES, "mel": {0: "batch_size", 2: "frames"}}
VOCODER_AXES = {"mel": {0: "batch_size", 2: "frames"}, "audio": {0: "batch_size", 1: "time"}}


class ExportError(VoxtrainError, RuntimeError):
    """The voice cannot be exported, or its ONNX graph does not speak like PyTorch."""


@dataclass(frozen=True)
class ParityResult:
    """One sentence through both engines; `feed` is "piper" (pads between ids), "voxtrain" (no
    pads), "split" (VOICE.acoustic.onnx then VOICE.vocoder.onnx on the whole mel) or "stream".
    A "stream" result holds the streamed split graphs to the unstreamed ones (the `torch_`
    fields are then theirs) within STREAM_MAX_ABS: windows, not engines, are what it checks."""

    text: str
    feed: str
    torch_samples: int
    onnx_samples: int
    max_abs: float  # largest |onnx - torch| over samples (inf when the lengths differ)
    rel_rms: float  # rms(onnx - torch) / rms(torch)

    def ok(self, tolerance: float) -> bool:
        limit = STREAM_MAX_ABS if self.feed == "stream" else tolerance
        return self.torch_samples == self.onnx_samples and self.max_abs <= limit


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
    bytes: int  # VOICE.onnx alone
    stream_paths: tuple[Path, ...]
    export_seconds: float
    parity_seconds: float
    parity: ParityReport

    def describe(self) -> str:
        streams = "".join(f", {p.name} ({p.stat().st_size / 2**20:.1f} MB)" for p in self.stream_paths)
        return (f"wrote {self.path} ({self.bytes / 2**20:.1f} MB), {self.config_path.name}{streams} in "
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
    first text also as voxtrain's engine feeds it (the pads are dropped exactly, so once is
    enough) and, when the voice has its streaming graphs, through those whole and streamed."""
    pad = synth.acoustic.symbols.pad_id
    results = []
    # allow_unknown: a symbol the table lacks becomes unk for both engines alike; parity asks no more.
    for i, (text, ids) in enumerate(zip(texts, synth.phoneme_ids(list(texts), allow_unknown=True), strict=True)):
        want = synth.waveforms([text], allow_unknown=True)[0]
        results.append(_compare(text, "piper", want, voice.run(intersperse_pads(ids, pad))))
        if i == 0:
            results.append(_compare(text, "voxtrain", want, voice.run(ids)))
            if voice.can_stream:
                whole = voice.run_split(ids)
                results.append(_compare(text, "split", want, whole))
                results.append(_compare(text, "stream", whole, np.concatenate(list(voice.stream_ids(ids)))))
    return ParityReport(tuple(results), tolerance)


def build_graph(synth: Synthesizer) -> PiperGraph:
    """The module to trace: the synthesizer's own model and HiFi-GAN generator."""
    if synth.vocoder is None or not hasattr(synth.vocoder, "generator"):
        raise ExportError("an ONNX voice needs the HiFi-GAN vocoder")
    return PiperGraph(synth.acoustic.model, synth.vocoder.generator, synth.acoustic.symbols.pad_id)


def _ids_args(example_ids: list[int]) -> tuple[torch.Tensor, ...]:
    ids = torch.tensor([example_ids], dtype=torch.long)
    return ids, torch.tensor([len(example_ids)]), torch.tensor([0.667, 1.0, 0.8])


def trace_to_onnx(graph: PiperGraph, example_ids: list[int]) -> bytes:
    """The TorchScript-based exporter (dynamo=False) on one example; lengths stay dynamic."""
    return _trace(graph, _ids_args(example_ids), INPUT_NAMES, ["output", "durations"], DYNAMIC_AXES)


def trace_stream_graphs(graph: PiperGraph, example_ids: list[int]) -> tuple[bytes, bytes]:
    """The piper graph's two halves alone: (acoustic: ids -> mel + durations, vocoder: mel -> audio)."""
    acoustic: AcousticGraph = graph.acoustic
    args = _ids_args(example_ids)
    acoustic_bytes = _trace(acoustic, args, INPUT_NAMES, ["mel", "durations"], ACOUSTIC_AXES)
    with torch.no_grad():
        mel = acoustic(*args)[0]
    return acoustic_bytes, _trace(VocoderGraph(graph.generator), (mel,), ["mel"], ["audio"], VOCODER_AXES)


def _trace(module: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str], axes: dict) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # Expected and harmless here: the exporter's own deprecation notice, and tracer notes on
        # branches fixed at trace time that PiperGraph does not depend on (the attention kernel
        # chosen by size computes the same numbers; a tuple of 3 unpacked from a tensor).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes)
    return buffer.getvalue()


def export_onnx_voice(
    checkpoint: str | Path,
    out: str | Path,
    vocoder_path: str | Path | None = None,
    tolerance: float = PARITY_MAX_ABS,
    texts: Sequence[str] = PARITY_SENTENCES,
    stream: bool = True,
) -> OnnxExport:
    """Export `checkpoint` (.pt or .safetensors) with HiFi-GAN (`vocoder_path`, default the
    bundled LJSpeech V1) to OUT.onnx + OUT.onnx.json and, with `stream`, the two streaming
    graphs beside them. Nothing is written unless every graph passes the parity check;
    ExportError names the numbers otherwise."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: an ONNX voice must end in .onnx")
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"an ONNX export needs {' and '.join(missing)}: pip install 'voxtrain[deploy]'")
    synth = Synthesizer(load_acoustic_model(Path(checkpoint)), "hifigan",
                        None if vocoder_path is None else Path(vocoder_path), precision="fp32")
    acoustic = synth.acoustic
    start = time.perf_counter()
    if not texts:
        raise ExportError("the parity check needs at least one text")
    example = intersperse_pads(synth.phoneme_ids([texts[0]], allow_unknown=True)[0], acoustic.symbols.pad_id)
    graph = build_graph(synth)
    model_bytes = trace_to_onnx(graph, example)
    stream_bytes = trace_stream_graphs(graph, example) if stream else None
    export_seconds = time.perf_counter() - start

    vocoder = synth.vocoder_path.name if synth.vocoder_path else "hifigan (bundled LJSpeech V1)"
    provenance = {"voxtrain_version": __version__, "step": acoustic.step, "checkpoint": Path(checkpoint).name,
                  "vocoder": vocoder, "opset": OPSET}
    names = stream_file_names(out.name)
    if stream:
        provenance["stream"] = {**names, "context_frames": context_frames(synth.vocoder.generator.params),
                                "tolerance_max_abs": STREAM_MAX_ABS}
    config = piper_voice_config(acoustic.config.audio, acoustic.config.text, acoustic.symbols, provenance)
    start = time.perf_counter()
    try:
        acoustic_bytes, vocoder_bytes = stream_bytes or (None, None)
        voice = OnnxVoice(model_bytes, config, acoustic=acoustic_bytes, vocoder=vocoder_bytes)
        report = check_parity(voice, synth, texts, tolerance)
    except OnnxVoiceError as err:
        raise ExportError(f"the exported graph does not run: {err}") from None
    parity_seconds = time.perf_counter() - start
    if not report.ok:
        raise ExportError(f"refusing to write {out}: its audio differs from PyTorch's.\n{report.describe()}")

    config["voxtrain"]["parity"] = report.to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    config_path = out.with_name(out.name + ".json")
    stream_paths = tuple(out.with_name(name) for name in names.values()) if stream_bytes else ()
    # The streaming graphs first: a voice config never names files that are not there yet.
    for path, data in zip(stream_paths, stream_bytes or (), strict=True):
        write_atomic(data, path)
    write_atomic(model_bytes, out)
    # ensure_ascii=False keeps the IPA of the phoneme map readable, as piper's own voices do.
    write_text_atomic(config_path, json.dumps(config, ensure_ascii=False, indent=1) + "\n")
    return OnnxExport(out, config_path, len(model_bytes), stream_paths, export_seconds, parity_seconds, report)
