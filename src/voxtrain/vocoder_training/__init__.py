"""Fine-tuning the HiFi-GAN generator to a new speaker (`voxtrain train-vocoder`).

The pretrained LJSpeech generator renders another voice's predicted mels with a metallic
sound; trained a little on the fine-tuned acoustic model's own teacher-forced mels against
the real audio of that voice, it loses it. `train_vocoder` runs (or resumes) such a
fine-tune in a run directory and leaves the best generator, in the jik876 format
`load_hifigan` and `voxtrain synth --vocoder-path` read, at `RunDir(run).vocoder_export`,
and beside it the whole voice at `RunDir(run).best_export`: the acoustic model, whose sidecar
names that generator so that synth, the exports and evaluate use it unasked.
"""

from __future__ import annotations

from pathlib import Path

from voxtrain.config import Config
from voxtrain.train.engine import TrainResult, run_task
from voxtrain.vocoder_training.setup import VocoderOptions
from voxtrain.vocoder_training.sources import VocoderTrainingError
from voxtrain.vocoder_training.task import VocoderOpener


def train_vocoder(
    checkpoint: str | Path,
    features: str | Path,
    corpus: str | Path,
    run_dir: str | Path,
    config: Config | None = None,
    until_step: int | None = None,
    stop_at: float | None = None,
) -> TrainResult:
    """Fine-tune (or resume fine-tuning) the bundled HiFi-GAN generator in `run_dir`.

    checkpoint: the acoustic model (a `voxtrain train` checkpoint .pt or .safetensors export)
    trained on `features`, the feature store `voxtrain prepare` made from `corpus`. config:
    its `vocoder_training`, `checkpoint` and `training.trackers` sections apply (None: the
    defaults). until_step: a stage target; stop_at: a wall-clock deadline (time.time()), after
    which it validates, saves and returns; SIGTERM/SIGINT saves and returns exit code 0. It runs
    on the same harness as `voxtrain train` (its exit codes, its out-of-memory retry and non-finite skip).
    Raises VocoderTrainingError (or the store's StoreError, the lock's RunLockedError) when
    the inputs cannot be used, with what to do.
    """
    opts = VocoderOptions(Path(checkpoint), Path(features), Path(corpus), Path(run_dir),
                          config if config is not None else Config(), until_step, stop_at)
    return run_task(VocoderOpener(opts), opts.run_dir, opts.until_step, opts.stop_at)


__all__ = ["VocoderOptions", "VocoderTrainingError", "train_vocoder"]
