"""Listening scores during training: rank 0 synthesizes the held-out sentences with the
current weights and scores what a listener would hear (voxtrain.listening).

The speaker reference is the HiFi-GAN copy-synthesis of the first validation clips: the
store keeps mels, not audio, and going through the same vocoder as the samples makes the
similarity measure what the acoustic model learned, not the vocoder's colouring.

Nothing here may end a run: a missing `eval` extra is one warning and no scores (the best
checkpoint is then chosen by val_mel), a scorer that raises is a warning, a
`listening_failed` event and the other scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import Event
from voxtrain.artifacts.recorder import RunRecorder
from voxtrain.artifacts.store import FeatureStore
from voxtrain.config import Config
from voxtrain.data.loader import FeatureDataset

log = logging.getLogger("voxtrain.train")


class ListeningEvaluator:
    def __init__(self, config: Config, store: FeatureStore, synthesizer: Callable[[], Any],
                 recorder: RunRecorder, run: RunDir, validate_every: int | None = None):
        """`synthesizer()` gives the voxtrain.inference.torch_voice.Synthesizer of the voice being
        trained; validate_every: the task's validation cadence (training.validate_every unless given)."""
        self.cfg, self.store, self.synthesizer, self.recorder, self.run = config.evaluation, store, synthesizer, \
            recorder, run
        self.validate_every = validate_every or config.training.validate_every
        self.available = self.cfg.enabled and bool(self.cfg.scorers)
        self._scorers = self._reference = self._sentences = None

    def due(self, step: int) -> bool:
        return self.available and step % (self.cfg.every or self.validate_every) == 0

    def _setup(self) -> bool:
        """Load the scorers and the sentences once; False (after one warning) without the extra."""
        if self._scorers is not None:
            return True
        from voxtrain.listening import ListeningUnavailable, Scorers, default_sentences, read_sentences

        try:
            self._scorers = Scorers(self.cfg.scorers)
        except ListeningUnavailable as err:
            log.warning("listening scores are off: %s. Training goes on; the best checkpoint is chosen by val_mel.",
                        err)
            self.recorder.event(Event.LISTENING_FAILED, 0, scorer="all", error=str(err))
            self.available = False
            return False
        file = self.cfg.sentences_file
        sentences = read_sentences(file) if file else default_sentences()
        self._sentences = sentences[: self.cfg.sentences]
        return True

    def _speaker_reference(self, synth: Any) -> Any:
        from voxtrain.listening import speaker_reference

        if self._reference is None and "speaker" in self.cfg.scorers:
            indices = self.store.split_indices("val")[: self.cfg.reference_clips]
            dataset = FeatureDataset(self.store, indices)
            clips = []
            with torch.no_grad():
                for i in range(len(dataset)):
                    mel = dataset[i]["mel"].T.to(synth.device)
                    clips.append(synth.vocoder(mel)[0].float().cpu().numpy())
            self._reference = speaker_reference(clips, synth.sample_rate) if clips else None
        return self._reference

    def evaluate(self, step: int) -> dict[str, float] | None:
        """Score the voice at `step`: the scores that were measured (none when the evaluation
        failed as a whole), or None when scoring is off."""
        try:
            return self._evaluate(step)
        except Exception as err:  # a broken scorer must never end the run it measures
            log.warning("listening evaluation failed at step %d (%s: %s); training goes on, this evaluation's "
                        "best checkpoint is judged by val_mel", step, type(err).__name__, err)
            error = f"{type(err).__name__}: {err}"
            # The record says this validation was due a score, as the best-checkpoint replay needs.
            self.recorder.eval(step, {}, errors={"all": error})
            self.recorder.event(Event.LISTENING_FAILED, step, scorer="all", error=error)
            return {}

    def _evaluate(self, step: int) -> dict[str, float] | None:
        if not self.due(step) or not self._setup():
            return None
        from voxtrain.listening import composite_score, score_synthesizer

        t0 = time.perf_counter()
        synth = self.synthesizer()
        if synth.vocoder is None:
            log.warning("listening scores need a sample vocoder (training.sample_vocoder is none): scoring is off")
            self.available = False
            return None
        with torch.random.fork_rng(devices=[]):
            result = score_synthesizer(synth, self._sentences, self._scorers, self._speaker_reference(synth),
                                       out_dir=self.run.eval_sample_dir(step))
        scores = dict(result.scores)
        if (composite := composite_score(scores)) is not None:
            scores["composite"] = composite
        seconds = time.perf_counter() - t0
        self.recorder.eval(step, scores, seconds=seconds, sentences=len(self._sentences) - len(result.refused),
                           texts=self._sentences,
                           errors=result.errors or None,
                           refused=[r.to_json() for r in result.refused] or None)
        for scorer, error in result.errors.items():
            log.warning("listening scorer %s failed at step %d: %s (training goes on; this evaluation's best "
                        "checkpoint is judged by val_mel)", scorer, step, error)
            self.recorder.event(Event.LISTENING_FAILED, step, scorer=scorer, error=error)
        for r in result.refused:
            log.warning("evaluation sentence %d refused: %s", r.index + 1, r.why)
        log.info("listening scores at step %d: %s (%.1fs)", step,
                 " ".join(f"{k} {v:.3f}" for k, v in scores.items()) or "none", seconds)
        return scores


