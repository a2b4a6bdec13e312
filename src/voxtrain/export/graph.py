"""The one module that becomes the ONNX voice: phoneme ids in, audio out, in piper's convention.

It runs the trained FastSpeech2's own layers and the HiFi-GAN generator; only the steps of
`FastSpeech2.infer` that decide shapes from data in Python (`int(tensor)`, `searchsorted`,
an `if` on the durations) are written again here as tensor arithmetic a tracer can record
with dynamic lengths. The export's parity check holds this graph to `infer` + the vocoder.

Inputs, as piper feeds them: `input` (B, T) int64 ids, `input_lengths` (B,) int64,
`scales` (3,) float32 = [noise, length, noise_w]. Outputs: audio (B, 1, 1, samples) in [-1, 1],
and durations (B, 1, T) float32, the frames each input id lasts (0 for pads), which piper's
Python API reads as alignments (x hop_length = samples per id). For streaming, the same
acoustic half is also exported alone (AcousticGraph: mel and durations), beside the
generator alone (mel -> audio).
Piper and voxtrain's engine feed one utterance (B = 1). A batch runs too, padded to its longest
item; a shorter item's last ~8 frames then differ from it spoken alone (the vocoder hears the
zero frames after it) and its audio runs on past its end.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from voxtrain.model import FastSpeech2
from voxtrain.model.layers import PositionalEncoding, lengths_to_mask
from voxtrain.vocoder import HifiGanGenerator


class GraphPositions(nn.Module):
    """The sinusoid table of `PositionalEncoding`, computed in the graph for the length at hand.

    The model slices a fixed table (and recomputes it past `max_positions`); a traced slice
    would be capped at the table, so the graph makes exactly the rows it needs instead.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # The same frequencies, computed the same way, as model.layers.sinusoid_table.
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        self.register_buffer("div", div, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        position = torch.arange(x.shape[1], device=x.device).to(torch.float32)[:, None]
        angle = position * self.div
        # sin on even channels, cos on odd ones; an odd width drops the last cos column.
        table = torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1).flatten(1)[:, : self.dim]
        return x + table.to(x.dtype)[None]


def expand_tokens(x: Tensor, durations: Tensor) -> tuple[Tensor, Tensor]:
    """`model.variance.regulate_length` for a tracer: token i of x repeated durations[b, i] times.

    (B, N, ...) -> (B, T, ...) zero past each item's total, plus the (B,) totals. Frame t
    belongs to the count of tokens whose cumulative end is <= t, which is what searchsorted
    (right=True) returns; ONNX has no searchsorted, so the count is a compare and a sum.
    """
    ends = durations.cumsum(dim=1)
    lengths = ends[:, -1]
    frames = torch.arange(lengths.max(), device=x.device)
    token = (ends[:, None, :] <= frames[None, :, None]).sum(dim=-1).clamp_max(x.shape[1] - 1)
    index = token.reshape(*token.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    out = torch.gather(x, 1, index)
    keep = (frames[None, :] < lengths[:, None]).reshape(*token.shape, *([1] * (x.dim() - 2)))
    return out * keep.to(out.dtype), lengths


def round_durations(log_durations: Tensor, mask: Tensor, length_scale: Tensor) -> Tensor:
    """`model.variance.durations_from_log` without its Python `if`: an item whose durations
    all round to zero gives its most confident token one frame, for every item at once."""
    pace = torch.reciprocal(length_scale)  # divided by, as infer divides by pace
    # exp - 1 for expm1, which ONNX lacks: they differ by ~1e-7 frames, which round() only feels at .5.
    frames = ((torch.exp(log_durations.float()) - 1) / pace).clamp_min(0)
    durations = torch.round(frames).long() * mask.long()
    empty = durations.sum(dim=1, keepdim=True) == 0
    best = frames.masked_fill(~mask, -1.0).argmax(dim=1, keepdim=True)
    is_best = torch.arange(frames.shape[1], device=frames.device)[None, :] == best
    return durations + (empty & is_best).long()


def ids_to_phonemes(ids: Tensor, lengths: Tensor, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Piper's ids without its pads (and without positions at or past `lengths`): the ids the
    model was trained on, their (B,) counts, and the (B, T) mask of input positions kept."""
    keep = (ids != pad_id) & (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None])
    # Dropping pads is length regulation with durations 0 (drop) or 1 (keep).
    phonemes, phoneme_lens = expand_tokens(ids[..., None], keep.long())
    return phonemes.squeeze(-1), phoneme_lens, keep


def durations_per_input(durations: Tensor, keep: Tensor) -> Tensor:
    """(B, N) frames of the kept phonemes -> (B, 1, T) frames of every input id, 0 for the
    dropped ones: the shape and meaning of the `w_ceil` output of piper's alignment-patched
    voices, which piper multiplies by hop_length to get samples per id."""
    index = (keep.long().cumsum(dim=1) - 1).clamp(0, durations.shape[1] - 1)
    per_id = torch.gather(durations, 1, index) * keep.long()
    return per_id.to(torch.float32).unsqueeze(1)


class AcousticGraph(nn.Module):
    """The acoustic half: piper's inputs -> mel (B, n_mels, frames) and durations (B, 1, T).

    Piper puts its pad id between phonemes; `pad_id` ids are dropped here (and positions
    at or past input_lengths), so the model sees exactly the ids voxtrain's own front end
    makes. The phoneme_id_map of the voice config maps phonemes to the model's own ids, and
    maps whatever the model must not see (pads, marks it was trained without) to pad_id.
    """

    def __init__(self, model: FastSpeech2, pad_id: int = 0) -> None:
        super().__init__()
        # A copy: the positional tables are swapped for in-graph ones, the caller's model stays as it was.
        self.model = copy.deepcopy(model).eval()
        for module in list(self.model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, PositionalEncoding):
                    setattr(module, name, GraphPositions(child.dim))
        self.pad_id = pad_id

    def forward(self, ids: Tensor, lengths: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        phonemes, phoneme_lens, keep = ids_to_phonemes(ids, lengths, self.pad_id)
        text_mask = lengths_to_mask(phoneme_lens, phonemes.shape[1])
        enc = m.encoder(m.embedding(phonemes), text_mask)
        # From here on, FastSpeech2.infer step by step, with its own private helpers.
        log_duration, pitch, energy = m._predict(enc, text_mask)
        durations = round_durations(log_duration, text_mask, scales[1])
        x = enc + m.pitch_embedding(pitch, text_mask) + m.energy_embedding(energy, text_mask)
        x, mel_lens = expand_tokens(x, durations)
        mel, post = m._decode(x, lengths_to_mask(mel_lens, x.shape[1]))
        mel = mel if post is None else post
        return mel.transpose(1, 2), durations_per_input(durations, keep)


class PiperGraph(nn.Module):
    """Acoustic model + vocoder as one module in piper's calling convention (see the module doc):
    audio (B, 1, 1, samples) and, as piper's alignment-patched voices have, durations (B, 1, T)."""

    def __init__(self, model: FastSpeech2, generator: HifiGanGenerator, pad_id: int = 0) -> None:
        super().__init__()
        self.acoustic = AcousticGraph(model, pad_id)
        self.generator = generator.eval()

    def forward(self, ids: Tensor, lengths: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
        mel, durations = self.acoustic(ids, lengths, scales)
        audio = self.generator(mel)  # (B, 1, samples)
        return audio.unsqueeze(1), durations  # piper's (B, 1, 1, samples)


class VocoderGraph(nn.Module):
    """The generator alone, for streaming: mel (B, n_mels, frames) -> audio (B, frames * hop)."""

    def __init__(self, generator: HifiGanGenerator) -> None:
        super().__init__()
        self.generator = generator.eval()

    def forward(self, mel: Tensor) -> Tensor:
        return self.generator(mel).squeeze(1)
