"""What a training run records as it goes: metrics.jsonl, and the same numbers in every
experiment tracker of `training.trackers` (TensorBoard by default), through Accelerate's
tracker classes.

metrics.jsonl is the run's record (the monitor reads only it); the trackers show the same
scalars, so they always agree with it. The trackers are started on first use, so a run that
never logs pays nothing for them, and then get the run's resolved config once, as
hyperparameters (flat `section.key` names; lists and nulls as JSON text).

What each tracker gets:

- tensorboard: scalars, the images (`log_images`), the audio (`add_audio`) and the config
  (HPARAMS tab), all in the one events file a session writes in RUN/tensorboard; a resumed
  session purges the events a killed one wrote past the resume step.
- wandb: scalars, images (`wandb.Image`), audio (`wandb.Audio`) and the config, in project
  `training.tracker_project`, mode `training.wandb_mode` (offline: RUN/wandb, for `wandb sync`).
- mlflow: scalars as metrics and the config as params, in experiment `training.tracker_project`
  at `training.mlflow_tracking_uri` (default: $MLFLOW_TRACKING_URI, else a file store in
  RUN/mlruns). MLflow has no audio and no per-step images, so images are PNG artifacts
  `images/TAG/step_NNNNNNN.png` and audio WAV artifacts `audio/TAG/step_NNNNNNN.wav`.
- the other trackers Accelerate knows (aim, clearml, comet_ml, dvclive, swanlab, trackio):
  scalars and the config only, built as `Accelerator.init_trackers` builds them.

Each session is a new W&B / MLflow run named after the run directory. A tracker that fails
to start (not installed, bad URI), or fails later, is a warning in the log and a
`tracker_failed` event in metrics.jsonl, and is dropped: the other trackers and the run go on.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from voxtrain.artifacts.image import png_bytes, uint8_grey
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import EVAL, TRAIN, VAL, Event, MetricsWriter
from voxtrain.artifacts.wav import write_wav
from voxtrain.config import TrainingConfig

if TYPE_CHECKING:
    import torch

    from voxtrain.config import Config

# Record fields that are coordinates, not curves.
_NOT_SCALARS = frozenset({"step", "time", "epoch", "target_step", "max_steps"})


class RunRecorder:
    def __init__(self, run: RunDir, resume_step: int | None = None, config: Config | None = None,
                 log: Callable[[str], Any] | None = None):
        """resume_step: the step a resumed run restarts from. TensorBoard drops the events
        a killed session wrote past it, so steps redone after the resume are plotted once.
        config: the run's resolved config: its `training.trackers` and their settings, and the
        hyperparameters they are given (None: TensorBoard only, no hyperparameters).
        log: where warnings go (a tracker that failed), besides metrics.jsonl."""
        self.run = run
        self.metrics = MetricsWriter(run.metrics)
        self._resume_step = resume_step
        self._config = config
        self._training = config.training if config is not None else TrainingConfig()
        self._warn = log or logging.getLogger(__name__).warning
        self._trackers: list[_Tracker] | None = None  # None until first use
        self._step = resume_step or 0

    # -- records -------------------------------------------------------------------------
    def train(self, step: int, **fields: Any) -> dict:
        """A train record (losses, lr, speed...) in metrics.jsonl and under train/ in the trackers."""
        record = self.metrics.write(TRAIN, step=step, **fields)
        self._scalars("train", step, fields)
        return record

    def val(self, step: int, losses: dict[str, float]) -> dict:
        """Validation losses as `loss_NAME` in metrics.jsonl and val/NAME in the trackers."""
        record = self.metrics.write(VAL, step=step, **{f"loss_{k}": v for k, v in losses.items()})
        self._scalars("val", step, losses)
        return record

    def eval(self, step: int, scores: dict[str, float], **fields: Any) -> dict:
        """Listening scores by name in metrics.jsonl (type "eval", with `fields` such as the
        seconds spent and any scorer errors) and as eval/NAME in the trackers."""
        record = self.metrics.write(EVAL, step=step, **scores, **fields)
        self._scalars("eval", step, {**scores, "seconds": fields.get("seconds")})
        return record

    def event(self, name: str, step: int, **fields: Any) -> dict:
        return self.metrics.event(name, step, **fields)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """image: (1, H, W) in [0, 1]."""
        pixels = image.detach().float().cpu().numpy()
        pixels = pixels.reshape(pixels.shape[-2:])
        self._each("image", step, lambda t: t.image(tag, pixels, step))

    def audio(self, tag: str, wav: np.ndarray, step: int, sample_rate: int) -> None:
        """wav: mono float samples in [-1, 1]."""
        self._each("audio", step, lambda t: t.audio(tag, wav, step, sample_rate))

    def flush(self) -> None:
        for tracker in list(self._trackers or []):
            self._guarded(tracker, "flush", self._step, tracker.flush)

    def close(self) -> None:
        for tracker in list(self._trackers or []):
            self._guarded(tracker, "finish", self._step, tracker.inner.finish)
        self._trackers = None
        self.metrics.close()

    # -- the trackers --------------------------------------------------------------------
    def _scalars(self, prefix: str, step: int, fields: dict[str, Any]) -> None:
        values = {f"{prefix}/{key}": value for key, value in fields.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in _NOT_SCALARS}
        if values:
            self._each("log", step, lambda t: t.inner.log(values, step=step))

    def _each(self, what: str, step: int, call: Callable[[_Tracker], None]) -> None:
        self._step = step
        if self._trackers is None:
            self._start(step)
        for tracker in list(self._trackers):
            self._guarded(tracker, what, step, lambda tracker=tracker: call(tracker))

    def _guarded(self, tracker: _Tracker, what: str, step: int, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as err:  # a tracker is a view of the run: it never stops the run
            self._trackers.remove(tracker)
            self._failed(tracker.name, what, step, err)

    def _start(self, step: int) -> None:
        from accelerate import PartialState

        PartialState()  # Accelerate's tracker classes log through it (the trainer's Accelerator made it)
        self._trackers = []
        hyperparameters = _hyperparameters(self._config.to_dict()) if self._config is not None else None
        for name in self._training.trackers:
            try:
                tracker = _open(name, self.run, self._training, self._resume_step)
            except Exception as err:
                self._failed(name, "start", step, err)
                continue
            self._trackers.append(tracker)
            if hyperparameters:
                self._guarded(tracker, "start", step, lambda tracker=tracker: tracker.hyperparameters(hyperparameters))

    def _failed(self, name: str, what: str, step: int, err: Exception) -> None:
        error = f"{type(err).__name__}: {err}".splitlines()[0]
        if what == "start":
            hint = (" Install its package (`pip install 'voxtrain[trackers]'` for wandb and mlflow) or remove it "
                    "from training.trackers." if isinstance(err, ImportError) else "")
            self._warn(f"experiment tracker {name} failed to start ({error}); training goes on without it.{hint}")
        else:
            self._warn(f"experiment tracker {name} failed ({what} at step {step}: {error}); nothing more is "
                       f"sent to it, training goes on.")
        self.metrics.event(Event.TRACKER_FAILED, step, tracker=name, during=what, error=error)


def _open(name: str, run: RunDir, training: TrainingConfig, resume_step: int | None) -> _Tracker:
    adapter = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}.get(name, _Tracker)
    tracker = adapter(adapter.build(name, run, training, resume_step))
    tracker.inner.start()
    return tracker


class _Tracker:
    """An Accelerate tracker (`inner`): scalars through its `log`, the config through its
    `store_init_configuration`; images and audio only where a subclass knows how."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name: str = inner.name

    @staticmethod
    def build(name: str, run: RunDir, training: TrainingConfig, resume_step: int | None) -> Any:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        kind = LOGGER_TYPE_TO_CLASS[name]  # as Accelerator.init_trackers builds them
        if kind.requires_logging_directory:
            return kind(training.tracker_project, str(run.root))
        return kind(training.tracker_project)

    def hyperparameters(self, values: dict[str, Any]) -> None:
        self.inner.store_init_configuration(values)

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        """pixels: (H, W) in [0, 1], first row at the top."""

    def audio(self, tag: str, wav: np.ndarray, step: int, sample_rate: int) -> None:
        pass

    def flush(self) -> None:
        pass


class _TensorBoard(_Tracker):
    @staticmethod
    def build(name: str, run: RunDir, training: TrainingConfig, resume_step: int | None) -> Any:
        from accelerate.tracking import TensorBoardTracker

        # Accelerate writes to logging_dir/run_name: that is RUN/tensorboard.
        return TensorBoardTracker(run.tensorboard.name, run.tensorboard.parent, purge_step=resume_step)

    def hyperparameters(self, values: dict[str, Any]) -> None:
        # Into the session's own events file. (Accelerate's store_init_configuration would
        # open one more writer, in a new subfolder, and write an hparams.yml there at every
        # session; config.yaml already holds the config.)
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(values, {}):
            self.inner.writer.file_writer.add_summary(summary)

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.inner.log_images({tag: pixels[None, None]}, step=step)  # NCHW

    def audio(self, tag: str, wav: np.ndarray, step: int, sample_rate: int) -> None:
        self.inner.writer.add_audio(tag, wav[None], step, sample_rate=sample_rate)

    def flush(self) -> None:
        self.inner.writer.flush()


class _WandB(_Tracker):
    @staticmethod
    def build(name: str, run: RunDir, training: TrainingConfig, resume_step: int | None) -> Any:
        from accelerate.tracking import WandBTracker

        return WandBTracker(training.tracker_project, name=run.name, dir=str(run.wandb.parent),
                            mode=training.wandb_mode)

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.inner.log_images({tag: [uint8_grey(pixels)]}, step=step)

    def audio(self, tag: str, wav: np.ndarray, step: int, sample_rate: int) -> None:
        import wandb

        self.inner.log({tag: wandb.Audio(wav, sample_rate=sample_rate)}, step=step)


class _MLflow(_Tracker):
    @staticmethod
    def build(name: str, run: RunDir, training: TrainingConfig, resume_step: int | None) -> Any:
        # A training run does not send MLflow usage telemetry unless the environment asks for it.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        from accelerate.tracking import MLflowTracker

        uri = training.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or run.mlruns.resolve().as_uri()
        if urlparse(uri).scheme in ("", "file"):
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless told.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        note = f"voxtrain run {run.root.resolve()}" + (f", resumed at step {resume_step}" if resume_step else "")
        return MLflowTracker(experiment_name=training.tracker_project, run_name=run.name, description=note)

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self._artifact(f"images/{tag}", f"step_{step:07d}.png", lambda path: path.write_bytes(png_bytes(pixels)))

    def audio(self, tag: str, wav: np.ndarray, step: int, sample_rate: int) -> None:
        self._artifact(f"audio/{tag}", f"step_{step:07d}.wav", lambda path: write_wav(path, wav, sample_rate))

    def _artifact(self, folder: str, name: str, write: Callable[[Path], Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            write(path)
            self.inner.log_artifact(str(path), artifact_path=folder)


def _hyperparameters(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as flat `section.key` values of the types every tracker takes."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_hyperparameters(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return flat
