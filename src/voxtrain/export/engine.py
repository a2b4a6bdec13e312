"""The onnx engine: an exported voice (VOICE.onnx + VOICE.onnx.json) run by onnxruntime.

Text goes through voxtrain's own front end (voxtrain.text: normalization, espeak-ng,
symbol table), ids through the ONNX graph; torch is never imported, so a deployment needs
only onnxruntime, numpy, soundfile and the text packages. The same graph plays in piper.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from voxtrain.artifacts.layout import synthesis_outputs
from voxtrain.artifacts.wav import write_wav
from voxtrain.export.voice_config import VoiceConfigError, read_voxtrain_section
from voxtrain.text import TextProcessor
from voxtrain.text.speakable import TextRefused, check_foreign_policy, speakable_ids


class OnnxVoiceError(ValueError):
    """An exported voice cannot be loaded or cannot speak a text; the message says why."""


def _session(model: str | Path | bytes, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxVoiceError("the onnx engine needs onnxruntime: pip install 'voxtrain[deploy]'") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise OnnxVoiceError(f"onnxruntime cannot load the voice: {err}") from None


class OnnxVoice:
    """An exported voice in memory: text -> waveform with onnxruntime, like voxtrain.synth.Synthesizer."""

    def __init__(self, model: str | Path | bytes, config: dict[str, Any], threads: int | None = None,
                 foreign_text: str = "spell", source: str = "voice") -> None:
        try:
            check_foreign_policy(foreign_text)
        except TextRefused as err:
            raise OnnxVoiceError(str(err)) from None
        try:
            self.text_config, self.symbols = read_voxtrain_section(config, source)
        except VoiceConfigError as err:
            raise OnnxVoiceError(str(err)) from None
        self.config = config
        self.foreign_text = foreign_text
        self.session = _session(model, threads)
        self._text: TextProcessor | None = None  # built on first use: espeak costs a library copy

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, foreign_text: str = "spell") -> OnnxVoice:
        """Load VOICE.onnx and the VOICE.onnx.json beside it."""
        path = Path(path)
        config_path = path.with_name(path.name + ".json")
        if not path.is_file():
            raise OnnxVoiceError(f"{path}: no such voice file")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise OnnxVoiceError(f"{config_path}: cannot read the voice config: {err}") from None
        return cls(path, config, threads, foreign_text, source=str(config_path))

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    def run(self, ids: list[int], length_scale: float = 1.0) -> np.ndarray:
        """The graph on one id sequence (voxtrain's ids, or piper's with pads): 1-D float32 audio."""
        feed = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            # noise and noise_w are ignored by the graph; piper's defaults are passed for form.
            "scales": np.asarray([0.667, length_scale, 0.8], dtype=np.float32),
        }
        try:
            return self.session.run(None, feed)[0].reshape(-1)
        except Exception as err:  # onnxruntime's own exception types (InvalidArgument, Fail, ...)
            raise OnnxVoiceError(f"onnxruntime failed on {len(ids)} ids: {err}") from None

    def phoneme_ids(self, texts: list[str], allow_unknown: bool = False) -> list[list[int]]:
        """voxtrain's model input for each text, refused as Synthesizer.phoneme_ids refuses it."""
        if self._text is None:
            self._text = TextProcessor(self.text_config, self.symbols)
        try:
            return speakable_ids(self._text, texts, self.foreign_text, allow_unknown)
        except TextRefused as err:
            raise OnnxVoiceError(str(err)) from None

    def waveforms(self, texts: list[str], pace: float = 1.0, allow_unknown: bool = False) -> list[np.ndarray]:
        """One waveform per text; pace > 1 speaks faster (the graph's length_scale is 1 / pace)."""
        if pace <= 0:
            raise OnnxVoiceError(f"pace must be > 0, got {pace}")
        return [self.run(ids, 1.0 / pace) for ids in self.phoneme_ids(texts, allow_unknown)]

    def write(self, wav: np.ndarray, path: str | Path) -> Path:
        return write_wav(path, wav, self.sample_rate)


def synthesize_onnx(
    text: str | list[str],
    voice: str | Path,
    out: str | Path,
    pace: float = 1.0,
    threads: int | None = None,
    foreign_text: str = "spell",
) -> list[Path]:
    """`voxtrain synth --engine onnx`: like voxtrain.synth.synthesize, with an exported voice."""
    texts = [text] if isinstance(text, str) else list(text)
    texts = [t for t in (t.strip() for t in texts) if t]
    if not texts:
        raise OnnxVoiceError("no text to synthesize")
    try:
        paths = synthesis_outputs(len(texts), Path(out))
    except ValueError as err:
        raise OnnxVoiceError(str(err)) from None
    engine = OnnxVoice.load(voice, threads, foreign_text)
    for path, wav in zip(paths, engine.waveforms(texts, pace), strict=True):
        engine.write(wav, path)
    return paths
