"""The one module that names every path of a run directory (`RunDir`) and of a feature store
(`StoreLayout`).

    runs/NAME/
      config.yaml  run.json  metrics.jsonl
      checkpoints/ckpt-step00025000.pt  checkpoints/best.safetensors (+ best.json)
      samples/step_0001000/sample_001.wav  samples/eval_0001000/sample_001.wav (listening scores)
      report.html (voxtrain report)
      tensorboard/  mlruns/ (MLflow's local store, when that tracker is on)  wandb/ (W&B offline runs)
      logs/train_YYYYmmdd_HHMMSS.log  logs/train.pid  logs/train.lock
      (train-vocoder runs) checkpoints/generator_best.pt, and best.safetensors: the acoustic model
        whose sidecar names that generator (the whole voice)  vocoder_data/mels.npy audio.npy index.json

    features/ (voxtrain prepare --out)
      config.json  shards/shard_00003.{mel,pitch,energy,phonemes}.npy  shards/shard_00003.json
      symbols.json  manifest.jsonl  stats.json  rejected.tsv  COMPLETE  .prepare.lock
      (what each file holds: `voxtrain.artifacts.store`)

    voices/NAME/ (voxtrain finetune --run)
      pipeline.json (the plan and each stage's record)  features/ (a feature store)
      acoustic/ (a run: train --init-from)  vocoder/ (a run: train-vocoder)
      voice.safetensors + voice.json (the finished voice; its sidecar names voice.generator.pt)
      voice.onnx + voice.onnx.json (with --onnx)  logs/ (as a run's: the lock, the PID, a detached log)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from voxtrain.atomic import is_temp_file

CHECKPOINT_RE = re.compile(r"^ckpt-step(\d{8})\.pt$")
SHARD_RE = re.compile(r"^shard_(\d+)\.")


def export_sidecar(weights: Path) -> Path:
    """The JSON (config, symbols, provenance) that travels with exported safetensors weights."""
    return Path(weights).with_suffix(".json")


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"ckpt-step{step:08d}.pt"

    @property
    def best_export(self) -> Path:
        return self.checkpoints / "best.safetensors"

    @property
    def best_export_sidecar(self) -> Path:
        return export_sidecar(self.best_export)

    @property
    def vocoder_export(self) -> Path:
        """`train-vocoder`'s best generator, jik876 format (`{"generator": state_dict}`)."""
        return self.checkpoints / "generator_best.pt"

    @property
    def vocoder_data(self) -> Path:
        """`train-vocoder`'s training pairs: the acoustic model's teacher-forced mels and the real
        audio they are paired with, computed once per run so a resume trains on the same data."""
        return self.root / "vocoder_data"

    @property
    def vocoder_mels(self) -> Path:
        """Teacher-forced mels of every clip, concatenated: float32 (sum_T, n_mels)."""
        return self.vocoder_data / "mels.npy"

    @property
    def vocoder_audio(self) -> Path:
        """The real audio of every clip, cut to n_frames * hop and concatenated: float32 (sum_T * hop,)."""
        return self.vocoder_data / "audio.npy"

    @property
    def vocoder_index(self) -> Path:
        """Per clip id, split and offsets, and what the pairs were made from; written last."""
        return self.vocoder_data / "index.json"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def sample_dir(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}"

    def alignment_image(self, step: int) -> Path:
        """The validation pass's alignment of its first clip, as a PNG (for the report page)."""
        return self.sample_dir(step) / "alignment.png"

    def eval_sample_dir(self, step: int) -> Path:
        """Clips synthesized for the listening scores of the evaluation at `step`."""
        return self.samples / f"eval_{step:07d}"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @staticmethod
    def sample_name(index: int) -> str:
        return f"sample_{index + 1:03d}.wav"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def mlruns(self) -> Path:
        """The local MLflow file store of `training.trackers: [mlflow]` when no tracking URI is set."""
        return self.root / "mlruns"

    @property
    def wandb(self) -> Path:
        """W&B's local files (an offline run's, for `wandb sync`): W&B makes this folder itself
        inside the `dir` it is given, which is therefore `wandb.parent`."""
        return self.root / "wandb"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pid_file(self) -> Path:
        return self.logs / "train.pid"

    @property
    def lock_file(self) -> Path:
        return self.logs / "train.lock"

    def new_log_file(self) -> Path:
        return self.logs / time.strftime("train_%Y%m%d_%H%M%S.log")

    def latest_log_file(self) -> Path | None:
        logs = sorted(self.logs.glob("train_*.log")) if self.logs.is_dir() else []
        return logs[-1] if logs else None

    def checkpoint_files(self) -> list[tuple[int, Path]]:
        """(step, path) of every rotation checkpoint, oldest first (temporary files excluded)."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def stale_temp_files(self) -> list[Path]:
        """Temporary files of saves that never finished (the trainer was killed mid-write)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if is_temp_file(p))

    def create(self) -> None:
        for d in (self.root, self.checkpoints, self.samples, self.logs):
            d.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class StoreLayout:
    """Every path of a feature store, the folder `voxtrain prepare --out` writes."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The audio and text settings the features were computed with (written first)."""
        return self.root / "config.json"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    def shard_array(self, index: int, key: str) -> Path:
        """One array (mel, pitch, energy, phonemes) of shard `index`: its clips, concatenated."""
        return self.shards / f"shard_{index:05d}.{key}.npy"

    def shard_meta(self, index: int) -> Path:
        """Shard `index`'s clips, rejections and array checksums: its completion marker."""
        return self.shards / f"shard_{index:05d}.json"

    def shard_files(self) -> list[tuple[int, Path]]:
        """(shard index, path) of every file of every shard on disk, finished or not."""
        if not self.shards.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in self.shards.iterdir() if (m := SHARD_RE.match(p.name)))

    @property
    def symbols(self) -> Path:
        return self.root / "symbols.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.jsonl"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected.tsv"

    @property
    def complete(self) -> Path:
        """Written last of all: a store without it is incomplete (being prepared, or stopped)."""
        return self.root / "COMPLETE"

    @property
    def prepare_lock(self) -> Path:
        """Held by the one `voxtrain prepare` writing the store."""
        return self.root / ".prepare.lock"


@dataclass(frozen=True)
class FinetuneDir:
    """Every path of a `voxtrain finetune` pipeline: its stages' own runs and stores inside it,
    and the finished voice at its top."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def pipeline(self) -> Path:
        """The plan and each stage's record (`voxtrain.pipeline.records`)."""
        return self.root / "pipeline.json"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def acoustic(self) -> RunDir:
        return RunDir(self.root / "acoustic")

    @property
    def vocoder(self) -> RunDir:
        return RunDir(self.root / "vocoder")

    @property
    def voice(self) -> Path:
        """The finished voice: synth, evaluate and export take it as it is."""
        return self.root / "voice.safetensors"

    @property
    def voice_generator(self) -> Path:
        """The voice's fine-tuned HiFi-GAN generator, which its sidecar names."""
        return self.root / "voice.generator.pt"

    @property
    def onnx(self) -> Path:
        return self.root / "voice.onnx"
