"""The batch every training, validation and evaluation pass takes: padded tensors plus lengths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


@dataclass
class Batch:
    """Padded utterances; padding is zeros and is masked by the lengths.

    phonemes (B, N) long; phoneme_lens (B,); mels (B, T, n_mels) log-mel; mel_lens (B,);
    pitch and energy (B, T), z-normalised, frame level; ids: the clip ids, for reports.
    """

    phonemes: Tensor
    phoneme_lens: Tensor
    mels: Tensor
    mel_lens: Tensor
    pitch: Tensor
    energy: Tensor
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.phonemes.shape[0])

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: fn(v) if torch.is_tensor(v) else v for k, v in values.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def split(self, parts: int) -> list[Batch]:
        """The same utterances as `parts` smaller batches (as even as possible), each trimmed
        to its own longest item, so a smaller batch also needs less memory for padding."""
        n = len(self)
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        out = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi <= lo:
                continue
            n_max, t_max = int(self.phoneme_lens[lo:hi].max()), int(self.mel_lens[lo:hi].max())
            out.append(Batch(self.phonemes[lo:hi, :n_max], self.phoneme_lens[lo:hi], self.mels[lo:hi, :t_max],
                             self.mel_lens[lo:hi], self.pitch[lo:hi, :t_max], self.energy[lo:hi, :t_max],
                             ids=self.ids[lo:hi]))
        return out

    def frame_counts(self) -> tuple[int, int]:
        """(real, padded) mel frames. Call it on the host copy: on a GPU it would sync."""
        return int(self.mel_lens.sum()), int(self.mel_lens.max()) * len(self)

    def pin_memory(self) -> Batch:
        """DataLoader(pin_memory=True) calls this, so host-to-GPU copies can overlap compute."""
        return self._map(Tensor.pin_memory)
