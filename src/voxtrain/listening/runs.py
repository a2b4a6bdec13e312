"""Listening scores of saved voices: one checkpoint (`evaluate_checkpoint`) or every checkpoint
of a run (`evaluate_run`), with the ceiling and floor rows that give the numbers a scale.

Rows on the held-out sentences: each checkpoint (HiFi-GAN), and two floors: the (best)
checkpoint's own mels through Griffin-Lim, and an untrained model of the same config. Rows on
the validation clips (needs the feature store): see `listening.references`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxtrain.artifacts.checkpoint_format import CheckpointError
from voxtrain.artifacts.checkpoints import list_checkpoints
from voxtrain.artifacts.layout import RunDir, StoreLayout
from voxtrain.artifacts.metrics_format import number, read_metrics, trajectory
from voxtrain.artifacts.store import FeatureStore
from voxtrain.inference.loader import AcousticModel, load_acoustic_model
from voxtrain.inference.torch_voice import Synthesizer
from voxtrain.listening.references import reference_rows
from voxtrain.listening.scoring import Scorers
from voxtrain.listening.sentences import default_sentences
from voxtrain.listening.speaker import SpeakerReference
from voxtrain.listening.synthesis import ListeningRow, score_synthesizer
from voxtrain.model import FastSpeech2

UNTRAINED_SEED = 0


@dataclass
class Evaluation:
    """Rows of listening scores and what they were measured on."""

    rows: list[ListeningRow] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    similarity_reference: dict | None = None
    seconds: float = 0.0

    def row(self, name: str) -> ListeningRow:
        return next(r for r in self.rows if r.name == name)

    def to_json(self, per_clip: bool = False) -> dict:
        return {"sentences": list(self.sentences), "similarity_reference": self.similarity_reference,
                "seconds": round(self.seconds, 1), "rows": [r.to_json(per_clip) for r in self.rows]}


def untrained_model(acoustic: AcousticModel, seed: int = UNTRAINED_SEED) -> AcousticModel:
    """A freshly initialised model of the same config and symbols (a floor: what no training sounds like)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = FastSpeech2(acoustic.config.model, len(acoustic.symbols), acoustic.config.audio.n_mels)
    finally:
        torch.random.set_rng_state(state)
    return AcousticModel(model.eval(), acoustic.config, acoustic.symbols, step=0)


def _open_store(features: str | Path | None) -> FeatureStore | None:
    return None if features is None else FeatureStore(features)


def _references(store: FeatureStore | None, scorers: Scorers, corpus, reference, max_clips, device):
    """(reference rows, the reference to score against)."""
    if store is None:
        return [], reference
    rows, built = reference_rows(store, scorers, corpus, max_clips, device)
    return rows, reference if reference is not None else built


def _floor_rows(acoustic: AcousticModel, sentences: list[str], scorers: Scorers,
                reference: SpeakerReference | None, device: str) -> list[ListeningRow]:
    gl = Synthesizer(acoustic, "griffin-lim", device=device, precision="fp32")
    untrained = Synthesizer(untrained_model(acoustic), "hifigan", device=device, precision="fp32")
    return [score_synthesizer(gl, sentences, scorers, reference, name="Griffin-Lim vocoder", kind="floor",
                              step=acoustic.step),
            score_synthesizer(untrained, sentences, scorers, reference, name="untrained model", kind="floor")]


def evaluate_checkpoint(
    path: str | Path,
    sentences: list[str] | None = None,
    features: str | Path | None = None,
    corpus: str | Path | None = None,
    scorers: Scorers | None = None,
    reference: SpeakerReference | None = None,
    out_dir: str | Path | None = None,
    references: bool = True,
    max_reference_clips: int | None = None,
    device: str = "cpu",
    vocoder_path: str | Path | None = None,
) -> Evaluation:
    """Score one checkpoint (.pt, or an exported .safetensors with its .json) on the sentences
    (voxtrain's held-out list when None). With `features` (its feature store) come the ceiling
    and floor rows on the validation clips and the speaker reference (real clips when `corpus`
    is given, else copy-synthesis) unless `reference` is given; `references=False` scores the
    checkpoint alone. `out_dir` keeps the checkpoint's clips as WAVs. `vocoder_path`: a HiFi-GAN
    generator (e.g. from `train-vocoder`) instead of the bundled one."""
    t0 = time.perf_counter()
    sentences = default_sentences() if sentences is None else list(sentences)
    scorers = scorers or Scorers()
    acoustic = load_acoustic_model(path, device)
    ref_rows, reference = _references(_open_store(features) if references else None, scorers, corpus, reference,
                                      max_reference_clips, device)
    synth = Synthesizer(acoustic, "hifigan", vocoder_path, device=device, precision="fp32")
    rows = [score_synthesizer(synth, sentences, scorers, reference, out_dir, name=Path(path).name,
                              step=acoustic.step, path=str(path))]
    if references:
        rows += _floor_rows(acoustic, sentences, scorers, reference, device) + ref_rows
    return Evaluation(rows, sentences, reference.to_json() if reference else None, time.perf_counter() - t0)


def _features_of_run(run: RunDir) -> Path | None:
    """The feature store a run was trained on, as its run.json records it (when it still exists)."""
    try:
        path = json.loads(run.run_info.read_text(encoding="utf-8"))["dataset"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(path) if StoreLayout(path).complete.is_file() else None


def evaluate_run(
    run_dir: str | Path,
    sentences: list[str] | None = None,
    features: str | Path | None = None,
    corpus: str | Path | None = None,
    scorers: Scorers | None = None,
    max_reference_clips: int | None = None,
    device: str = "cpu",
    vocoder_path: str | Path | None = None,
) -> Evaluation:
    """Score every rotation checkpoint of a run and its best export, plus the floor rows (of
    the best) and the reference rows. `features` defaults to the store the run's run.json names;
    without a store there are no reference rows and no similarity."""
    t0 = time.perf_counter()
    run = RunDir(run_dir)
    sentences = default_sentences() if sentences is None else list(sentences)
    scorers = scorers or Scorers()
    records = read_metrics(run.metrics)
    val_mel = {r["step"]: number(r.get("loss_mel")) for r in trajectory(records).val}
    targets = [(f"step {c.step}", c.path) for c in list_checkpoints(run, records) if c.valid is not False]
    if run.best_export.is_file():
        targets.append(("best export", run.best_export))
    if not targets:
        raise CheckpointError(f"{run.root}: no checkpoint to evaluate (checkpoints/ has no ckpt-step*.pt "
                              "and no best.safetensors)")
    store = _open_store(features if features is not None else _features_of_run(run))
    ref_rows, reference = _references(store, scorers, corpus, None, max_reference_clips, device)
    rows, floor_source = [], None
    for name, path in targets:
        acoustic = load_acoustic_model(path, device)
        synth = Synthesizer(acoustic, "hifigan", vocoder_path, device=device, precision="fp32")
        row = score_synthesizer(synth, sentences, scorers, reference, name=name, step=acoustic.step, path=str(path))
        row.extra["val_mel"] = val_mel.get(acoustic.step)
        rows.append(row)
        floor_source = acoustic  # the floors are made from the last target: the best export, when there is one
    rows += _floor_rows(floor_source, sentences, scorers, reference, device) + ref_rows
    return Evaluation(rows, sentences, reference.to_json() if reference else None, time.perf_counter() - t0)
