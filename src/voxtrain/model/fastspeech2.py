"""FastSpeech2 with a learned aligner (no external durations needed)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from voxtrain.config import ModelConfig
from voxtrain.model.aligner import AlignmentEncoder
from voxtrain.model.batch import Batch
from voxtrain.model.layers import Dropout, FFTStack, MaskedConv1d, lengths_to_mask
from voxtrain.model.mas import durations_from_alignment, monotonic_alignment_search
from voxtrain.model.variance import (
    VarianceEmbedding,
    VariancePredictor,
    durations_from_log,
    regulate_length,
)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class PostNet(nn.Module):
    """Residual conv refinement of the mel. No batch norm: its statistics would include
    padded frames, making outputs depend on how an item was batched."""

    def __init__(self, n_mels: int, channels: int, layers: int, dropout: float) -> None:
        super().__init__()
        widths = [n_mels] + [channels] * (layers - 1) + [n_mels]
        self.convs = nn.ModuleList(
            MaskedConv1d(c_in, c_out, 5) for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.drop = Dropout(dropout)

    def forward(self, mel: Tensor, mask: Tensor) -> Tensor:
        """mel: (B, T, n_mels), zero at padding -> refined mel, zero at padding."""
        x = mel
        for i, conv in enumerate(self.convs):
            x = conv(x, mask)
            if i < len(self.convs) - 1:
                x = self.drop(torch.tanh(x))
        return mel + x


def phoneme_average(frames: Tensor, hard: Tensor, durations: Tensor) -> Tensor:
    """Mean of a (B, T) frame-level value over each token's frames -> (B, N); 0 if no frames."""
    # Targets must not be rounded to bf16 under autocast (einsum would run as a bf16 bmm).
    with torch.autocast(device_type=frames.device.type, enabled=False):
        total = torch.einsum("bt,btn->bn", frames.float(), hard.float())
    return total / durations.clamp_min(1).float()


class MelMixture(NamedTuple):
    """A Laplace mixture per mel bin, each (B, T, n_mels, K)."""

    locations: Tensor
    log_scales: Tensor
    logits: Tensor


def mixture_mode(locations: Tensor, logits: Tensor) -> Tensor:
    """(..., K) -> (...): the location of each bin's most probable component. argmax takes the
    first of tied components, and gather keeps it a static-shape graph for the ONNX export."""
    best = logits.argmax(dim=-1, keepdim=True)
    return torch.gather(locations, -1, best).squeeze(-1)


def initial_offsets(k: int) -> Tensor:
    """Starting offsets of components 1..k-1 from component 0: +-0.5, +-1.0, ... log-mel steps,
    so the components begin apart and a gradient can tell them from each other."""
    return torch.tensor([0.5 * ((i + 1) // 2) * (1 if i % 2 else -1) for i in range(1, k)])


class FastSpeech2(nn.Module):
    """Embedding -> encoder -> variance adaptor (aligner + MAS durations) -> decoder -> mel."""

    def __init__(self, cfg: ModelConfig, n_symbols: int, n_mels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_mels = n_mels
        h = cfg.hidden

        def stack(layers: int) -> FFTStack:
            return FFTStack(
                h, layers, cfg.heads, cfg.conv_filter, cfg.conv_kernel, cfg.dropout, cfg.max_positions,
                cfg.attention_dropout,
            )

        self.embedding = nn.Embedding(n_symbols, h, padding_idx=0)
        self.encoder = stack(cfg.encoder_layers)
        self.aligner = AlignmentEncoder(h, n_mels, cfg.aligner)
        self.duration_predictor = VariancePredictor(h, cfg)
        self.pitch_predictor = VariancePredictor(h, cfg)
        self.energy_predictor = VariancePredictor(h, cfg)
        self.pitch_embedding = VarianceEmbedding(h, cfg.variance_embedding_kernel)
        self.energy_embedding = VarianceEmbedding(h, cfg.variance_embedding_kernel)
        self.decoder = stack(cfg.decoder_layers)
        self.mel_head = nn.Linear(h, n_mels)
        # A layer beside mel_head, not a wider mel_head: a base checkpoint's mel_head still loads
        # into component 0, and a fresh mixture (zero logits: ties go to component 0) speaks as it.
        self.mel_mixture = self._mixture_layer(h, n_mels, cfg.mel_mixture) if cfg.mel_mixture > 1 else None
        self.postnet = (
            PostNet(n_mels, cfg.postnet_channels, cfg.postnet_layers, cfg.dropout) if cfg.postnet_layers > 0 else None
        )

    @staticmethod
    def _mixture_layer(h: int, n_mels: int, k: int) -> nn.Linear:
        """Per bin: k - 1 offsets from mel_head, then k log-scales, then k logits."""
        layer = nn.Linear(h, n_mels * (3 * k - 1))
        with torch.no_grad():
            layer.weight.zero_()
            bias = torch.zeros(n_mels, 3 * k - 1)
            bias[:, : k - 1] = initial_offsets(k)
            layer.bias.copy_(bias.flatten())
        return layer

    def _mixture(self, hidden: Tensor) -> MelMixture | None:
        if self.mel_mixture is None:
            return None
        k = self.cfg.mel_mixture
        base = self.mel_head(hidden)[..., None]
        params = self.mel_mixture(hidden).unflatten(-1, (self.n_mels, 3 * k - 1))
        offsets, log_scales, logits = params.split([k - 1, k, k], dim=-1)
        return MelMixture(torch.cat([base, base + offsets], dim=-1), log_scales, logits)

    def _predict(self, enc: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.duration_predictor(enc, text_mask),
            self.pitch_predictor(enc, text_mask),
            self.energy_predictor(enc, text_mask),
        )

    def _decode(self, x: Tensor, mel_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        mel, post, _ = self._decode_mixture(x, mel_mask)
        return mel, post

    def _decode_mixture(self, x: Tensor, mel_mask: Tensor) -> tuple[Tensor, Tensor | None, MelMixture | None]:
        """The mel (the mixture's mode, or mel_head's output), the postnet's, and the mixture."""
        hidden = self.decoder(x, mel_mask)
        mixture = self._mixture(hidden)
        mel = self.mel_head(hidden) if mixture is None else mixture_mode(mixture.locations, mixture.logits)
        mel = mel * mel_mask[..., None].to(x.dtype)
        post = None if self.postnet is None else self.postnet(mel, mel_mask)
        return mel, post, mixture

    def forward(self, batch: Batch) -> dict[str, Any]:
        """Teacher-forced pass over a Batch (ground-truth mels, pitch and energy)."""
        phonemes, phoneme_lens, mels, mel_lens = batch.phonemes, batch.phoneme_lens, batch.mels, batch.mel_lens
        pitch, energy = batch.pitch, batch.energy
        text_mask = lengths_to_mask(phoneme_lens, phonemes.shape[1])
        mel_mask = lengths_to_mask(mel_lens, mels.shape[1])
        emb = self.embedding(phonemes)
        enc = self.encoder(emb, text_mask)

        # The aligner reads the raw embedding, not detached: early in training the
        # forward-sum loss is the only signal that makes embeddings of different phonemes
        # acoustically distinct. The encoder output is not used because the mel loss trains
        # it through durations taken from this very alignment, a feedback loop.
        attn_logprob, attn_soft, attn_logsoft = self.aligner(emb, mels, text_mask, mel_mask)
        attn_hard = monotonic_alignment_search(attn_logsoft[:, 0], phoneme_lens, mel_lens)
        durations = durations_from_alignment(attn_hard)
        pitch_target = phoneme_average(pitch * mel_mask, attn_hard, durations)
        energy_target = phoneme_average(energy * mel_mask, attn_hard, durations)

        log_duration_pred, pitch_pred, energy_pred = self._predict(enc, text_mask)
        x = (
            enc
            + self.pitch_embedding(pitch_target.to(enc.dtype), text_mask)
            + self.energy_embedding(energy_target.to(enc.dtype), text_mask)
        )
        x, _ = regulate_length(x, durations, mels.shape[1])
        mel_pred, mel_postnet, mixture = self._decode_mixture(x, mel_mask)
        return {
            "mel_pred": mel_pred,
            "mel_postnet": mel_postnet,
            "mel_mixture": mixture,
            "log_duration_pred": log_duration_pred,
            "pitch_pred": pitch_pred,
            "energy_pred": energy_pred,
            "duration_target": durations,
            "pitch_target": pitch_target,
            "energy_target": energy_target,
            "attn_logprob": attn_logprob,
            "attn_soft": attn_soft,
            "attn_hard": attn_hard[:, None],
            "text_mask": text_mask,
            "mel_mask": mel_mask,
        }

    @torch.no_grad()
    def infer(self, phonemes: Tensor, phoneme_lens: Tensor | None = None, pace: float = 1.0) -> dict[str, Any]:
        """Synthesize mels from phoneme ids; pace > 1 speaks faster.

        Returns mel (B, T, M) (postnet output when there is a postnet), mel_lens (B,),
        durations (B, N) long, plus the phoneme-level pitch and energy predictions.
        """
        was_training = self.training
        self.eval()
        try:
            if phoneme_lens is None:
                phoneme_lens = torch.full(
                    (phonemes.shape[0],), phonemes.shape[1], dtype=torch.long, device=phonemes.device
                )
            text_mask = lengths_to_mask(phoneme_lens, phonemes.shape[1])
            enc = self.encoder(self.embedding(phonemes), text_mask)
            log_duration_pred, pitch_pred, energy_pred = self._predict(enc, text_mask)
            durations = durations_from_log(log_duration_pred, text_mask, pace)
            x = enc + self.pitch_embedding(pitch_pred, text_mask) + self.energy_embedding(energy_pred, text_mask)
            x, mel_lens = regulate_length(x, durations)
            mel, post = self._decode(x, lengths_to_mask(mel_lens, x.shape[1]))
        finally:
            self.train(was_training)
        return {
            "mel": mel if post is None else post,
            "mel_lens": mel_lens,
            "durations": durations,
            "pitch": pitch_pred,
            "energy": energy_pred,
        }
