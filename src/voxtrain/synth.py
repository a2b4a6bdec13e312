"""Text to waveform: the same text front end as training, the acoustic model, a vocoder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxtrain.artifacts.layout import export_sidecar, synthesis_plan
from voxtrain.artifacts.wav import write_wav
from voxtrain.config import Config, config_from_dict
from voxtrain.malloc import retain_freed_memory
from voxtrain.model import FastSpeech2
from voxtrain.precision import autocast, resolve_precision, store_weights_for_autocast
from voxtrain.streaming import StreamError, StreamSettings, StreamStats, context_frames, stream_texts, stream_windows
from voxtrain.text import SymbolTable, TextProcessor
from voxtrain.text.speakable import TextRefused, check_foreign_policy, speakable_ids


class SynthError(ValueError):
    """Synthesis cannot proceed; the message says why and what to do."""


@dataclass
class AcousticModel:
    model: FastSpeech2
    config: Config
    symbols: SymbolTable
    step: int | None = None
    # A voice exported by `train-vocoder` names its fine-tuned generator, which lies beside it.
    vocoder_path: Path | None = None


def load_acoustic_model(path: str | Path, device: str | torch.device = "cpu") -> AcousticModel:
    """Load a training checkpoint (.pt) or an inference export (.safetensors + .json)."""
    from voxtrain.artifacts.checkpoints import CheckpointError
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
    model.load_state_dict(weights)
    model.to(device).eval()
    return AcousticModel(model, config, symbols, meta.get("step"), _voice_vocoder(path, meta))


def _voice_vocoder(path: Path, meta: dict) -> Path | None:
    """The generator a voice's sidecar names (a file name, beside the weights), checked to exist."""
    name = meta.get("vocoder")
    if not isinstance(name, str):
        return None
    generator = path.with_name(name)
    if not generator.is_file():
        raise SynthError(f"{path}: its sidecar {export_sidecar(path).name} names the vocoder {name}, which is "
                         f"not beside it: copy {name} next to {path.name}, or pass --vocoder-path")
    return generator


class Synthesizer:
    """Holds a model, its text front end and a vocoder; call it with text, get audio."""

    def __init__(
        self,
        acoustic: AcousticModel,
        vocoder: str = "hifigan",
        vocoder_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        foreign_text: str = "spell",
    ):
        """precision: auto (bf16 where the device computes it natively, else fp32), fp32,
        bf16 or fp16, applied as autocast to both models. foreign_text: what to do with letters
        outside the voice's language and pictographic symbols
        (voxtrain.text.speakable.FOREIGN_TEXT)."""
        from voxtrain.vocoder import load_vocoder

        try:
            check_foreign_policy(foreign_text)
        except TextRefused as err:
            raise SynthError(str(err)) from None
        self.foreign_text = foreign_text

        retain_freed_memory()
        self.acoustic = acoustic
        self.device = torch.device(device)
        try:
            self.precision = resolve_precision(precision, self.device)
        except ValueError as err:
            raise SynthError(str(err)) from None
        self.text = TextProcessor(acoustic.config.text, acoustic.symbols)
        if vocoder_path is None and vocoder == "hifigan":
            vocoder_path = acoustic.vocoder_path
        self.vocoder_path = None if vocoder_path is None else Path(vocoder_path)
        self.vocoder = None if vocoder == "none" else load_vocoder(
            vocoder, vocoder_path, acoustic.config.audio, self.device
        )

    @property
    def sample_rate(self) -> int:
        return self.acoustic.config.audio.sample_rate

    def phoneme_ids(self, texts: list[str], allow_unknown: bool = False) -> list[list[int]]:
        try:
            return speakable_ids(self.text, texts, self.foreign_text, allow_unknown)
        except TextRefused as err:
            raise SynthError(str(err)) from None

    @torch.no_grad()
    def mels(self, texts: list[str], pace: float = 1.0, allow_unknown: bool = False) -> list[torch.Tensor]:
        """One (n_mels, T) log-mel per text."""
        if pace <= 0:
            raise SynthError(f"pace must be > 0, got {pace}")
        out = []
        for ids in self.phoneme_ids(texts, allow_unknown):
            phonemes = torch.tensor([ids], dtype=torch.long, device=self.device)
            with autocast(self.precision, self.device):
                result = self.acoustic.model.infer(phonemes, pace=pace)
            out.append(result["mel"][0, : int(result["mel_lens"][0])].T.float())
        return out

    def waveforms(self, texts: list[str], pace: float = 1.0, allow_unknown: bool = False) -> list[np.ndarray]:
        if self.vocoder is None:
            raise SynthError("no vocoder loaded")
        return [self.vocode(mel) for mel in self.mels(texts, pace, allow_unknown)]

    def stream(self, text: str, pace: float = 1.0, allow_unknown: bool = False,
               settings: StreamSettings | None = None) -> Iterator[np.ndarray]:
        """One text's audio in chunks (voxtrain.streaming): the acoustic model runs before this
        returns (so a refused text raises here), HiFi-GAN chunk by chunk as they are taken.
        Joined, the chunks are waveforms()' audio within STREAM_MAX_ABS at fp32."""
        generator = getattr(self.vocoder, "generator", None)
        if generator is None:
            raise SynthError("streaming needs the HiFi-GAN vocoder (Griffin-Lim works on the whole mel)")
        mel = self.mels([text], pace, allow_unknown)[0]
        return stream_windows(mel, self.vocode, context_frames(generator.params), self.vocoder.hop_length, settings)

    def vocode(self, mel: torch.Tensor) -> np.ndarray:
        """One (n_mels, T) log-mel (or a window of one) -> 1-D float32 audio, at the synthesizer's precision."""
        if self.vocoder is None:
            raise SynthError("no vocoder loaded")
        with autocast(self.precision, self.device):
            return self.vocoder(mel)[0].float().cpu().numpy()

    def write(self, wav: np.ndarray, path: str | Path) -> Path:
        return write_wav(path, wav, self.sample_rate)


def _open(checkpoint: str | Path, vocoder: str, vocoder_path: str | Path | None, device: str, precision: str,
          foreign_text: str) -> Synthesizer:
    acoustic = load_acoustic_model(checkpoint, device)
    synth = Synthesizer(acoustic, vocoder, vocoder_path, device, precision, foreign_text)
    # The model was loaded for this call alone, so its weights can take the autocast dtype.
    store_weights_for_autocast(acoustic.model, synth.precision)
    return synth


def synthesize(
    text: str | list[str],
    checkpoint: str | Path,
    out: str | Path,
    vocoder: str = "hifigan",
    vocoder_path: str | Path | None = None,
    pace: float = 1.0,
    device: str = "cpu",
    precision: str = "auto",
    foreign_text: str = "spell",
) -> list[Path]:
    """Synthesize one text to `out` (a .wav path) or several texts into `out/` (a directory).
    foreign_text: spell, drop or refuse letters outside the voice's language."""
    texts, paths = synthesis_plan(text, out, error=SynthError)
    synth = _open(checkpoint, vocoder, vocoder_path, device, precision, foreign_text)
    for path, wav in zip(paths, synth.waveforms(texts, pace)):
        synth.write(wav, path)
    return paths


def synthesize_stream(
    text: str | list[str],
    checkpoint: str | Path,
    out: str | Path,
    vocoder_path: str | Path | None = None,
    pace: float = 1.0,
    device: str = "cpu",
    precision: str = "auto",
    foreign_text: str = "spell",
    settings: StreamSettings | None = None,
) -> list[tuple[str, StreamStats]]:
    """`voxtrain synth --stream`: like synthesize, streamed (voxtrain.streaming.stream_texts:
    out "-" is raw 16-bit PCM on stdout). Returns (where, stats) per text."""
    texts, paths = synthesis_plan(text, out, stdout_allowed=True, error=SynthError)
    synth = _open(checkpoint, "hifigan", vocoder_path, device, precision, foreign_text)
    try:
        return stream_texts(synth, texts, paths, pace, settings)
    except StreamError as err:
        raise SynthError(str(err)) from None
