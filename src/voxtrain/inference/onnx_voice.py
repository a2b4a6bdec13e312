"""The onnxruntime voice: an exported voice (VOICE.onnx + VOICE.onnx.json) without torch.

Text goes through voxtrain's own front end (voxtrain.text: normalization, espeak-ng,
symbol table), ids through the ONNX graph; torch is never imported, so a deployment needs
only onnxruntime, numpy, soundfile and the text packages. The same graph plays in piper.

Streaming (OnnxVoice.stream) runs the voice's two streaming graphs instead: the acoustic half
once, then the generator over mel windows (inference.streaming). Whole waveforms take the same
pair when the voice has it (the same audio within the parity tolerance), so one process that
both streams and synthesizes holds one copy of the weights; the piper graph is the fallback.
Each graph is loaded on first use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from voxtrain.artifacts.wav import write_wav
from voxtrain.inference.errors import OnnxVoiceError
from voxtrain.inference.plan import FOREIGN_TEXT_DEFAULT
from voxtrain.inference.streaming import StreamSettings, stream_windows
from voxtrain.inference.voice_config import VoiceConfigError, read_stream_section, read_voxtrain_section
from voxtrain.text import TextProcessor
from voxtrain.text.speakable import TextRefused, check_foreign_policy, speakable_ids


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


Model = str | Path | bytes


class OnnxVoice:
    """An exported voice in memory: text -> waveform with onnxruntime, like torch_voice.Synthesizer.

    `model` is the piper graph; `acoustic` and `vocoder` the streaming graphs. Given as None for
    a `model` path, they are the files the config names beside it, if it names them.
    """

    def __init__(self, model: Model, config: dict[str, Any], threads: int | None = None,
                 foreign_text: str = FOREIGN_TEXT_DEFAULT, source: str = "voice",
                 acoustic: Model | None = None, vocoder: Model | None = None) -> None:
        try:
            check_foreign_policy(foreign_text)
        except TextRefused as err:
            raise OnnxVoiceError(str(err)) from None
        try:
            self.text_config, self.symbols = read_voxtrain_section(config, source)
            self.stream_config = read_stream_section(config, source)
        except VoiceConfigError as err:
            raise OnnxVoiceError(str(err)) from None
        self.config = config
        self.foreign_text = foreign_text
        self.threads = threads
        if acoustic is None and vocoder is None and self.stream_config and not isinstance(model, bytes):
            acoustic, vocoder = (Path(model).with_name(self.stream_config[key]) for key in ("acoustic", "vocoder"))
        self._models: dict[str, Model | None] = {"voice": model, "acoustic": acoustic, "vocoder": vocoder}
        self._sessions: dict[str, Any] = {}
        self._text: TextProcessor | None = None  # built on first use: espeak costs a library copy

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, foreign_text: str = FOREIGN_TEXT_DEFAULT) -> OnnxVoice:
        """Load VOICE.onnx and the VOICE.onnx.json beside it (each graph is read on first use)."""
        path = Path(path)
        config_path = path.with_name(path.name + ".json")
        if not path.is_file() and not config_path.is_file():
            raise OnnxVoiceError(f"{path}: no such voice file")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise OnnxVoiceError(f"{config_path}: cannot read the voice config: {err}") from None
        return cls(path, config, threads, foreign_text, source=str(config_path))

    def _session(self, name: str) -> Any:
        if name not in self._sessions:
            model = self._models[name]
            if model is None:
                self.require_streaming()  # only the streaming graphs can be absent: raises, saying so
            if isinstance(model, Path) and not model.is_file():
                if name == "voice":
                    raise OnnxVoiceError(f"{model}: no such voice file")
                raise OnnxVoiceError(f"{model}: missing; the voice config names it as its {name} graph "
                                     "(copy it beside the voice, or export the voice again)")
            self._sessions[name] = _session(model, self.threads)
        return self._sessions[name]

    @property
    def session(self) -> Any:
        """The piper graph's onnxruntime session."""
        return self._session("voice")

    @property
    def can_stream(self) -> bool:
        return self.stream_config is not None and None not in (self._models["acoustic"], self._models["vocoder"])

    def _has_pair(self) -> bool:
        """The streaming graphs are given or on disk (so whole waveforms can take them too)."""
        pair = (self._models["acoustic"], self._models["vocoder"])
        return self.can_stream and all(not isinstance(m, Path) or m.is_file() for m in pair)

    def require_streaming(self) -> None:
        """Load the streaming graphs now; OnnxVoiceError saying how to get them if they are missing."""
        if not self.can_stream:
            raise OnnxVoiceError("this voice has no streaming graphs: export it again with "
                                 "`voxtrain export --onnx` (without --no-stream)")
        self._session("acoustic")
        self._session("vocoder")

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.config["hop_length"])

    def _run(self, name: str, feed: dict[str, np.ndarray], what: str) -> list[np.ndarray]:
        session = self._session(name)
        try:
            return session.run(None, feed)
        except Exception as err:  # onnxruntime's own exception types (InvalidArgument, Fail, ...)
            raise OnnxVoiceError(f"onnxruntime failed on {what}: {err}") from None

    @staticmethod
    def _ids_feed(ids: list[int], length_scale: float) -> dict[str, np.ndarray]:
        return {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            # noise and noise_w are ignored by the graph; piper's defaults are passed for form.
            "scales": np.asarray([0.667, length_scale, 0.8], dtype=np.float32),
        }

    def run(self, ids: list[int], length_scale: float = 1.0) -> np.ndarray:
        """The graph on one id sequence (voxtrain's ids, or piper's with pads): 1-D float32 audio."""
        return self._run("voice", self._ids_feed(ids, length_scale), f"{len(ids)} ids")[0].reshape(-1)

    def durations(self, ids: list[int], length_scale: float = 1.0) -> np.ndarray:
        """Samples each id lasts (0 for pads), from the piper graph's second output."""
        frames = self._run("voice", self._ids_feed(ids, length_scale), f"{len(ids)} ids")[1].reshape(-1)
        return frames.astype(np.int64) * self.hop_length

    def mel(self, ids: list[int], length_scale: float = 1.0) -> np.ndarray:
        """The streaming acoustic graph: an (n_mels, frames) float32 log-mel."""
        return self._run("acoustic", self._ids_feed(ids, length_scale), f"{len(ids)} ids")[0][0]

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """The streaming vocoder graph on an (n_mels, frames) log-mel: 1-D float32 audio."""
        feed = {"mel": np.ascontiguousarray(mel, dtype=np.float32)[None]}
        return self._run("vocoder", feed, f"{mel.shape[-1]} mel frames")[0].reshape(-1)

    def run_split(self, ids: list[int], length_scale: float = 1.0) -> np.ndarray:
        """The streaming graphs unstreamed (the whole mel at once): what run() gives, up to rounding."""
        return self.vocode(self.mel(ids, length_scale))

    def stream_ids(self, ids: list[int], length_scale: float = 1.0,
                   settings: StreamSettings | None = None) -> Iterator[np.ndarray]:
        """Audio chunks of one id sequence: the acoustic graph now, the vocoder as chunks are taken."""
        self.require_streaming()
        mel = self.mel(ids, length_scale)
        return stream_windows(mel, self.vocode, self.stream_config["context_frames"], self.hop_length, settings)

    def stream(self, text: str, pace: float = 1.0, allow_unknown: bool = False,
               settings: StreamSettings | None = None) -> Iterator[np.ndarray]:
        """Synthesizer.stream with onnxruntime: one text's audio in chunks that join to waveforms()'
        within inference.streaming.STREAM_MAX_ABS. The text front end and the acoustic graph run
        before this returns (so a refused text raises here), the vocoder chunk by chunk."""
        if pace <= 0:
            raise OnnxVoiceError(f"pace must be > 0, got {pace}")
        return self.stream_ids(self.phoneme_ids([text], allow_unknown)[0], 1.0 / pace, settings)

    def phoneme_ids(self, texts: list[str], allow_unknown: bool = False) -> list[list[int]]:
        """voxtrain's model input for each text, refused as Synthesizer.phoneme_ids refuses it."""
        if self._text is None:
            self._text = TextProcessor(self.text_config, self.symbols)
        try:
            return speakable_ids(self._text, texts, self.foreign_text, allow_unknown)
        except TextRefused as err:
            raise OnnxVoiceError(str(err)) from None

    def waveforms(self, texts: list[str], pace: float = 1.0, allow_unknown: bool = False) -> list[np.ndarray]:
        """One waveform per text; pace > 1 speaks faster (the graph's length_scale is 1 / pace).
        The streaming pair runs when the voice has it, else the piper graph."""
        if pace <= 0:
            raise OnnxVoiceError(f"pace must be > 0, got {pace}")
        speak = self.run_split if self._has_pair() else self.run
        return [speak(ids, 1.0 / pace) for ids in self.phoneme_ids(texts, allow_unknown)]

    def write(self, wav: np.ndarray, path: str | Path) -> Path:
        return write_wav(path, wav, self.sample_rate)

