"""Validation: losses on the held-out split, mel and alignment images, audio samples.

The validator is given what it uses (the model, the loss, where to put tensors, where to
record) and nothing else, so it can be run on any model, in training or outside it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import torch

from voxtrain.artifacts.image import write_png
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.recorder import RunRecorder
from voxtrain.artifacts.store import FeatureStore
from voxtrain.config import Config
from voxtrain.data.loader import FeatureDataset, collate
from voxtrain.model import Batch, FastSpeech2, FastSpeech2Loss

log = logging.getLogger("voxtrain.train")


def _image(x: torch.Tensor) -> torch.Tensor:
    """(H, W) -> (1, H, W) in [0, 1], low frequencies / first tokens at the bottom."""
    x = x.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return x.flip(0).unsqueeze(0)


class Validator:
    def __init__(
        self,
        model: FastSpeech2,
        loss_fn: FastSpeech2Loss,
        store: FeatureStore,
        config: Config,
        recorder: RunRecorder,
        run: RunDir,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        """`model` is the bare module (not a DDP wrapper); `autocast` makes the context the
        training step runs under, so validation computes in the same precision."""
        self.model, self.loss_fn, self.store, self.cfg = model, loss_fn, store, config
        self.recorder, self.run, self.device, self.autocast = recorder, run, device, autocast
        indices = store.split_indices("val")
        self.val_set = FeatureDataset(store, indices) if indices else None
        self._synth = None

    def _batches(self) -> Iterator[Batch]:
        order = sorted(range(len(self.val_set)), key=self.val_set.n_frames)
        size = self.cfg.training.batch_size
        for i in range(0, len(order), size):
            yield collate([self.val_set[j] for j in order[i : i + size]]).to(self.device)

    @torch.no_grad()
    def losses(self, step: int) -> tuple[dict[str, float], dict, Batch]:
        """Mean loss terms over the validation split, and the first batch with its outputs."""
        self.model.eval()
        sums: dict[str, float] = {}
        count, first = 0, None
        try:
            for batch in self._batches():
                with self.autocast():
                    out = self.model(batch)
                    _, parts = self.loss_fn(out, batch, step)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
                count += len(batch)
                if first is None:
                    first = (out, batch)
        finally:
            self.model.train()
        return {k: v / count for k, v in sums.items()}, *first

    def run_validation(self, step: int) -> dict[str, float] | None:
        """Losses (recorded), images and samples at `step`; the losses, or None without a split."""
        t0 = time.perf_counter()
        result = None
        if self.val_set is not None:
            result, out, batch = self.losses(step)
            self.recorder.val(step, result)
            self._images(out, batch, step)
        self._samples(step)
        self.recorder.flush()
        log.info("validation at step %d: %s (%.1fs)", step,
                 " ".join(f"{k} {v:.4f}" for k, v in (result or {}).items()) or "no validation split",
                 time.perf_counter() - t0)
        return result

    def _images(self, out: dict, batch: Batch, step: int) -> None:
        t, n = int(batch.mel_lens[0]), int(batch.phoneme_lens[0])
        self.recorder.image("val/mel_target", _image(batch.mels[0, :t].T), step)
        self.recorder.image("val/mel_predicted", _image(out["mel_pred"][0, :t].T), step)
        soft = _image(out["attn_soft"][0, 0, :t, :n].T)
        self.recorder.image("val/alignment_soft", soft, step)
        write_png(self.run.alignment_image(step), soft[0].numpy())  # for the report page
        self.recorder.image("val/alignment_hard", _image(out["attn_hard"][0, 0, :t, :n].T), step)

    def synthesizer(self):
        from voxtrain.inference.loader import AcousticModel
        from voxtrain.inference.torch_voice import Synthesizer

        if self._synth is None:
            acoustic = AcousticModel(self.model, self.cfg, self.store.symbols)
            self._synth = Synthesizer(acoustic, self.cfg.training.sample_vocoder, device=self.device)
        return self._synth

    def _samples(self, step: int) -> None:
        sentences = self.cfg.training.validation_sentences
        if not sentences or self.cfg.training.sample_vocoder == "none":
            return
        synth = self.synthesizer()
        try:
            wavs = synth.waveforms(sentences, allow_unknown=True)
        finally:
            self.model.train()
        out_dir = self.run.sample_dir(step)
        for i, wav in enumerate(wavs):
            synth.write(wav, out_dir / self.run.sample_name(i))
            self.recorder.audio(f"samples/{i + 1:03d}", wav, step, synth.sample_rate)
