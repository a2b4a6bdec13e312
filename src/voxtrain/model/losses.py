"""FastSpeech2 + aligner training objective. Padding never contributes to any term."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxtrain.config import AlignerConfig, TrainingConfig
from voxtrain.model.aligner import LOG_ZERO
from voxtrain.model.batch import Batch

# Log-probability of the CTC blank before renormalisation (Badlani et al. use -1): the
# blank lets mel frames be absorbed without forcing probability onto a wrong token.
_BLANK_LOGPROB = -1.0


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values over positions where mask is True (mask broadcasts over trailing dims)."""
    while mask.dim() < values.dim():
        mask = mask[..., None]
    weight = mask.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def forward_sum_loss(attn_logprob: Tensor, text_lens: Tensor, mel_lens: Tensor) -> Tensor:
    """CTC of each utterance's soft alignment against the token sequence 1..N.

    attn_logprob: (B, 1, T, N). Per-utterance loss is divided by N (as CTC's 'mean'
    reduction does), then averaged over the batch.
    """
    with torch.autocast(device_type=attn_logprob.device.type, enabled=False):
        logprob = attn_logprob[:, 0].float()
        n_max = logprob.shape[2]
        text_mask = torch.arange(n_max, device=logprob.device)[None, :] < text_lens[:, None]
        # Padded columns get exactly zero mass after the softmax, so they do not change it.
        logprob = logprob.masked_fill(~text_mask[:, None, :], LOG_ZERO)
        logprob = F.pad(logprob, (1, 0), value=_BLANK_LOGPROB)
        log_probs = F.log_softmax(logprob, dim=-1).transpose(0, 1)  # (T, B, N + 1)
        targets = torch.arange(1, n_max + 1, device=logprob.device).expand(len(text_lens), n_max)
        per_item = F.ctc_loss(log_probs, targets, mel_lens, text_lens, blank=0, reduction="none", zero_infinity=True)
        return (per_item / text_lens.clamp_min(1).float()).mean()


def binarization_loss(attn_hard: Tensor, attn_soft: Tensor) -> Tensor:
    """-sum(hard * log soft) / sum(hard): pulls the soft alignment onto the MAS path."""
    with torch.autocast(device_type=attn_soft.device.type, enabled=False):
        hard = attn_hard.float()
        log_soft = torch.log(attn_soft.float().clamp_min(1e-12))
        return -(hard * log_soft).sum() / hard.sum().clamp_min(1.0)


def binarization_weight(step: int, aligner: AlignerConfig, final: float) -> float:
    """0 before binarization_start_step, then linear to `final` over binarization_ramp_steps."""
    if step < aligner.binarization_start_step:
        return 0.0
    if aligner.binarization_ramp_steps == 0:
        return final
    progress = (step - aligner.binarization_start_step) / aligner.binarization_ramp_steps
    return final * min(1.0, progress)


class FastSpeech2Loss(nn.Module):
    """`(outputs, batch, step) -> (total, {mel, duration, pitch, energy, forward_sum,
    binarization, total})`. Dict entries are detached and unweighted except `total`."""

    def __init__(self, training: TrainingConfig, aligner: AlignerConfig) -> None:
        super().__init__()
        self.weights = training.loss_weights
        self.aligner = aligner
        self.mel_loss = F.l1_loss if training.mel_loss == "l1" else F.mse_loss

    def _mel_term(self, pred: Tensor, target: Tensor, mel_mask: Tensor) -> Tensor:
        return _masked_mean(self.mel_loss(pred.float(), target.float(), reduction="none"), mel_mask)

    @staticmethod
    def _scalar_term(pred: Tensor, target: Tensor, text_mask: Tensor) -> Tensor:
        return _masked_mean((pred.float() - target.float()) ** 2, text_mask)

    def forward(self, outputs: dict[str, Any], batch: Batch, step: int) -> tuple[Tensor, dict]:
        text_mask, mel_mask = outputs["text_mask"], outputs["mel_mask"]
        mels = batch.mels
        mel = self._mel_term(outputs["mel_pred"], mels, mel_mask)
        if outputs.get("mel_postnet") is not None:
            mel = mel + self._mel_term(outputs["mel_postnet"], mels, mel_mask)

        log_dur_target = torch.log1p(outputs["duration_target"].float())
        duration = _masked_mean((outputs["log_duration_pred"].float() - log_dur_target) ** 2, text_mask)
        pitch = self._scalar_term(outputs["pitch_pred"], outputs["pitch_target"], text_mask)
        energy = self._scalar_term(outputs["energy_pred"], outputs["energy_target"], text_mask)
        fsum = forward_sum_loss(outputs["attn_logprob"], batch.phoneme_lens, batch.mel_lens)
        binar = binarization_loss(outputs["attn_hard"], outputs["attn_soft"])

        w = self.weights
        total = (
            w.mel * mel
            + w.duration * duration
            + w.pitch * pitch
            + w.energy * energy
            + w.forward_sum * fsum
            + binarization_weight(step, self.aligner, w.binarization) * binar
        )
        terms = {
            "mel": mel,
            "duration": duration,
            "pitch": pitch,
            "energy": energy,
            "forward_sum": fsum,
            "binarization": binar,
            "total": total,
        }
        return total, {k: v.detach() for k, v in terms.items()}
