"""Validation (losses on the held-out split), audio samples, TensorBoard, best-model export."""

from __future__ import annotations

import logging
import shutil
import time
from typing import TYPE_CHECKING

import torch

from voxtrain.data.loader import FeatureDataset, collate
from voxtrain.train.checkpoints import export_weights

if TYPE_CHECKING:
    from voxtrain.train.engine import Trainer

log = logging.getLogger("voxtrain.train")


def _image(x: torch.Tensor) -> torch.Tensor:
    """(H, W) -> (1, H, W) in [0, 1], low frequencies / first tokens at the bottom."""
    x = x.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return x.flip(0).unsqueeze(0)


class Validator:
    def __init__(self, trainer: Trainer):
        self.t = trainer
        self.cfg = trainer.cfg
        indices = trainer.store.split_indices("val")
        self.val_set = FeatureDataset(trainer.store, indices) if indices else None
        self._synth = None
        self._tb = None

    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.t.run.tensorboard))
        return self._tb

    def scalars(self, record: dict) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("step", "time", "epoch"):
                self.tb.add_scalar(f"train/{key}", value, record["step"])

    def _batches(self):
        order = sorted(range(len(self.val_set)), key=self.val_set.n_frames)
        size = self.cfg.training.batch_size
        for i in range(0, len(order), size):
            yield collate([self.val_set[j] for j in order[i : i + size]])

    @torch.no_grad()
    def losses(self, step: int) -> tuple[dict[str, float], dict | None, dict | None]:
        model = self.t.accelerator.unwrap_model(self.t.model)
        model.eval()
        sums: dict[str, float] = {}
        count, first_out, first_batch = 0, None, None
        try:
            for batch in self._batches():
                batch = self.t._to_device(batch)
                with self.t.accelerator.autocast():
                    out = model(batch["phonemes"], batch["phoneme_lens"], batch["mels"], batch["mel_lens"],
                                batch["pitch"], batch["energy"])
                    _, parts = self.t.loss_fn(out, batch, step)
                n = len(batch["ids"])
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                count += n
                if first_out is None:
                    first_out, first_batch = out, batch
        finally:
            model.train()
        return {k: v / count for k, v in sums.items()}, first_out, first_batch

    def run(self, step: int) -> dict[str, float] | None:
        t0 = time.perf_counter()
        result = None
        if self.val_set is not None:
            result, out, batch = self.losses(step)
            self.t.metrics.write("val", step=step, **{f"loss_{k}": v for k, v in result.items()})
            for k, v in result.items():
                self.tb.add_scalar(f"val/{k}", v, step)
            self._images(out, batch, step)
        self._samples(step)
        log.info("validation at step %d: %s (%.1fs)", step,
                 " ".join(f"{k} {v:.4f}" for k, v in (result or {}).items()) or "no validation split",
                 time.perf_counter() - t0)
        return result

    def _images(self, out: dict, batch: dict, step: int) -> None:
        t = int(batch["mel_lens"][0])
        n = int(batch["phoneme_lens"][0])
        self.tb.add_image("val/mel_target", _image(batch["mels"][0, :t].T), step)
        self.tb.add_image("val/mel_predicted", _image(out["mel_pred"][0, :t].T), step)
        self.tb.add_image("val/alignment_soft", _image(out["attn_soft"][0, 0, :t, :n].T), step)
        self.tb.add_image("val/alignment_hard", _image(out["attn_hard"][0, 0, :t, :n].T), step)

    def _synthesizer(self):
        from voxtrain.synth import AcousticModel, Synthesizer

        if self._synth is None:
            model = self.t.accelerator.unwrap_model(self.t.model)
            acoustic = AcousticModel(model, self.cfg, self.t.store.symbols)
            self._synth = Synthesizer(acoustic, self.cfg.training.sample_vocoder, device=self.t.accelerator.device)
        return self._synth

    def _samples(self, step: int) -> None:
        sentences = self.cfg.training.validation_sentences
        if not sentences or self.cfg.training.sample_vocoder == "none":
            return
        synth = self._synthesizer()
        model = synth.acoustic.model
        try:
            wavs = synth.waveforms(sentences, allow_unknown=True)
        finally:
            model.train()
        out_dir = self.t.run.sample_dir(step)
        for i, wav in enumerate(wavs):
            synth.write(wav, out_dir / self.t.run.sample_name(i))
            self.tb.add_audio(f"samples/{i + 1:03d}", torch.from_numpy(wav).unsqueeze(0), step,
                              sample_rate=synth.sample_rate)

    def export_best(self) -> None:
        """Export the best-by-validation weights for inference, if the disk has room."""
        model = self.t.accelerator.unwrap_model(self.t.model)
        state = model.state_dict()
        size = sum(v.numel() * v.element_size() for v in state.values())
        free = shutil.disk_usage(self.t.run.checkpoints).free
        if free < size + self.cfg.checkpoint.disk_margin_mb * 2**20:
            self.t._event({"event": "export_skipped", "reason": "not enough free disk space", "bytes": size})
            log.warning("best-model export skipped: not enough disk space (%d MB free)", free >> 20)
            return
        meta = {"config": self.cfg.to_dict(), "symbols": self.t.store.symbols.to_dict(),
                "step": self.t.step, "val_mel_loss": self.t.ckpt.best_loss}
        export_weights(state, meta, self.t.run.best_export)
        self.t._event({"event": "best_exported", "val_mel_loss": self.t.ckpt.best_loss,
                       "path": str(self.t.run.best_export)})
