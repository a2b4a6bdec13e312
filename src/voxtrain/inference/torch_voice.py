"""The PyTorch voice: the same text front end as training, the acoustic model, a vocoder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from voxtrain.artifacts.wav import write_wav
from voxtrain.inference.errors import SynthError
from voxtrain.inference.loader import AcousticModel, load_acoustic_model, vocoder_choice
from voxtrain.inference.plan import FOREIGN_TEXT_DEFAULT
from voxtrain.inference.streaming import StreamSettings, context_frames, stream_windows
from voxtrain.malloc import retain_freed_memory
from voxtrain.precision import autocast, resolve_precision, store_weights_for_autocast
from voxtrain.text import TextProcessor
from voxtrain.text.speakable import TextRefused, check_foreign_policy, speakable_ids


class Synthesizer:
    """Holds a model, its text front end and a vocoder; call it with text, get audio."""

    def __init__(
        self,
        acoustic: AcousticModel,
        vocoder: str = "hifigan",
        vocoder_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        foreign_text: str = FOREIGN_TEXT_DEFAULT,
        postfilter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        """vocoder: hifigan (vocoder_path, else the generator the voice's sidecar names, else
        the bundled one), griffin-lim or none. precision: auto (bf16 where the device computes
        it natively, else fp32), fp32, bf16 or fp16, applied as autocast to both models.
        foreign_text: what to do with letters outside the voice's language and pictographic
        symbols (voxtrain.text.speakable.FOREIGN_TEXT). postfilter: applied to every predicted
        (n_mels, T) mel before the vocoder, e.g. voxtrain.audio.global_variance's."""
        from voxtrain.vocoder import load_vocoder

        try:
            check_foreign_policy(foreign_text)
        except TextRefused as err:
            raise SynthError(str(err)) from None
        self.foreign_text = foreign_text
        self.postfilter = postfilter

        retain_freed_memory()
        self.acoustic = acoustic
        self.device = torch.device(device)
        try:
            self.precision = resolve_precision(precision, self.device)
        except ValueError as err:
            raise SynthError(str(err)) from None
        self.text = TextProcessor(acoustic.config.text, acoustic.symbols)
        self.vocoder_path = vocoder_choice(acoustic, vocoder, vocoder_path)
        self.vocoder = None if vocoder == "none" else load_vocoder(
            vocoder, self.vocoder_path, acoustic.config.audio, self.device
        )

    @classmethod
    def load(cls, checkpoint: str | Path, vocoder: str = "hifigan", vocoder_path: str | Path | None = None,
             device: str = "cpu", precision: str = "auto", foreign_text: str = FOREIGN_TEXT_DEFAULT) -> Synthesizer:
        """A voice from a checkpoint or export, as `voxtrain synth` runs it: the model is loaded
        for this voice alone, so its weights are stored in the autocast dtype once."""
        synth = cls(load_acoustic_model(checkpoint, device), vocoder, vocoder_path, device, precision, foreign_text)
        store_weights_for_autocast(synth.acoustic.model, synth.precision)
        return synth

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
            mel = result["mel"][0, : int(result["mel_lens"][0])].T.float()
            out.append(mel if self.postfilter is None else self.postfilter(mel))
        return out

    def waveforms(self, texts: list[str], pace: float = 1.0, allow_unknown: bool = False) -> list[np.ndarray]:
        if self.vocoder is None:
            raise SynthError("no vocoder loaded")
        return [self.vocode(mel) for mel in self.mels(texts, pace, allow_unknown)]

    def require_streaming(self) -> None:
        """SynthError unless this voice can stream (its vocoder is HiFi-GAN)."""
        if getattr(self.vocoder, "generator", None) is None:
            raise SynthError("streaming needs the HiFi-GAN vocoder (Griffin-Lim works on the whole mel)")

    def stream(self, text: str, pace: float = 1.0, allow_unknown: bool = False,
               settings: StreamSettings | None = None) -> Iterator[np.ndarray]:
        """One text's audio in chunks (voxtrain.inference.streaming): the acoustic model runs
        before this returns (so a refused text raises here), HiFi-GAN chunk by chunk as they are
        taken. Joined, the chunks are waveforms()' audio within STREAM_MAX_ABS at fp32."""
        self.require_streaming()
        mel = self.mels([text], pace, allow_unknown)[0]
        context = context_frames(self.vocoder.generator.params)
        return stream_windows(mel, self.vocode, context, self.vocoder.hop_length, settings)

    def vocode(self, mel: torch.Tensor) -> np.ndarray:
        """One (n_mels, T) log-mel (or a window of one) -> 1-D float32 audio, at the synthesizer's precision."""
        if self.vocoder is None:
            raise SynthError("no vocoder loaded")
        with autocast(self.precision, self.device):
            return self.vocoder(mel)[0].float().cpu().numpy()

    def write(self, wav: np.ndarray, path: str | Path) -> Path:
        return write_wav(path, wav, self.sample_rate)
