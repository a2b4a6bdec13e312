"""What a training run records as it goes: metrics.jsonl and TensorBoard, side by side.

Every scalar goes to both, so the monitor (which reads only metrics.jsonl) and TensorBoard
always show the same numbers. TensorBoard is opened on first use: a run that never logs
pays nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.records import TRAIN, VAL, MetricsWriter

if TYPE_CHECKING:
    import numpy as np
    import torch

# Record fields that are coordinates, not curves.
_NOT_SCALARS = frozenset({"step", "time", "epoch", "target_step", "max_steps"})


class RunRecorder:
    def __init__(self, run: RunDir, resume_step: int | None = None):
        """resume_step: the step a resumed run restarts from. TensorBoard drops the events
        a killed session wrote past it, so steps redone after the resume are plotted once."""
        self.run = run
        self.metrics = MetricsWriter(run.metrics)
        self._purge_step = resume_step
        self._tb: Any = None

    @property
    def tensorboard(self) -> Any:
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run.tensorboard), purge_step=self._purge_step)
        return self._tb

    def _scalars(self, prefix: str, step: int, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in _NOT_SCALARS:
                self.tensorboard.add_scalar(f"{prefix}/{key}", value, step)

    def train(self, step: int, **fields: Any) -> dict:
        """A train record (losses, lr, speed...) in metrics.jsonl and under train/ in TensorBoard."""
        record = self.metrics.write(TRAIN, step=step, **fields)
        self._scalars("train", step, fields)
        return record

    def val(self, step: int, losses: dict[str, float]) -> dict:
        """Validation losses as `loss_NAME` in metrics.jsonl and val/NAME in TensorBoard."""
        record = self.metrics.write(VAL, step=step, **{f"loss_{k}": v for k, v in losses.items()})
        self._scalars("val", step, losses)
        return record

    def event(self, name: str, step: int, **fields: Any) -> dict:
        return self.metrics.event(name, step, **fields)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """image: (1, H, W) in [0, 1]."""
        self.tensorboard.add_image(tag, image, step)

    def audio(self, tag: str, wav: np.ndarray, step: int, sample_rate: int) -> None:
        import torch

        self.tensorboard.add_audio(tag, torch.from_numpy(wav).unsqueeze(0), step, sample_rate=sample_rate)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self.metrics.close()
