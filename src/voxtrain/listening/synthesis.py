"""Score a voice by what it says: synthesize sentences, optionally keep the WAVs, score them.

`score_synthesizer` works on any `voxtrain.inference.torch_voice.Synthesizer`, so on a model
still in training as well as on a voice from the loader. A sentence the voice cannot say (a
symbol it never saw, or nothing to speak) is reported by index and skipped; the others are
still scored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.wav import write_wav
from voxtrain.inference.errors import SynthError
from voxtrain.inference.torch_voice import Synthesizer
from voxtrain.listening.scoring import ScoreResult, Scorers
from voxtrain.listening.speaker import SpeakerReference


@dataclass(frozen=True)
class Refusal:
    """A sentence that was not synthesized: its index in the sentence list, its text, why."""

    index: int
    text: str
    why: str

    def to_json(self) -> dict:
        return {"index": self.index, "text": self.text, "why": self.why}


@dataclass
class ListeningRow:
    """The listening scores of one voice (or reference) on one set of texts."""

    name: str
    result: ScoreResult
    kind: str = "checkpoint"  # checkpoint | teacher | ceiling | floor
    sentence_set: str = ""  # what was spoken, e.g. "held-out sentences (30)"
    similarity_reference: str = ""  # what the similarity was measured against
    refused: list[Refusal] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock: synthesis, each scorer, total
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # this process's CPU time, the same parts
    n_clips: int = 0  # clips scored
    audio_seconds: float = 0.0  # their total duration
    step: int | None = None
    path: str | None = None
    extra: dict = field(default_factory=dict)  # e.g. the checkpoint's validation mel loss

    @property
    def scores(self) -> dict[str, float]:
        return self.result.scores

    @property
    def errors(self) -> dict[str, str]:
        return self.result.errors

    def to_json(self, per_clip: bool = False) -> dict:
        scored = self.result.to_json(per_clip)
        out = {"name": self.name, "kind": self.kind, "sentence_set": self.sentence_set, "n_clips": self.n_clips,
               "audio_seconds": round(self.audio_seconds, 2),
               "scores": scored["scores"], "errors": scored["errors"],
               "similarity_reference": self.similarity_reference,
               "refused": [r.to_json() for r in self.refused],
               "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
               "cpu_seconds": {k: round(v, 3) for k, v in self.cpu_seconds.items()},
               "step": self.step, "path": self.path}
        out.update(self.extra)
        if per_clip:
            out["per_clip"], out["transcripts"] = scored["per_clip"], scored["transcripts"]
        return out


def synthesize_sentences(synth: Synthesizer, sentences: list[str]) -> tuple[list[int], list[np.ndarray], list[Refusal]]:
    """(indices spoken, their waveforms, refusals); one sentence at a time so that one
    refusal costs only that sentence."""
    spoken, clips, refused = [], [], []
    for i, text in enumerate(sentences):
        try:
            clips.append(synth.waveforms([text])[0])
        except SynthError as err:
            refused.append(Refusal(i, text, str(err)))
            continue
        spoken.append(i)
    return spoken, clips, refused


def score_clips(
    name: str, clips: list[np.ndarray], sample_rate: int, texts: list[str], scorers: Scorers,
    reference: SpeakerReference | None, leave_one_out: bool = False, **row: object,
) -> ListeningRow:
    """Score ready-made clips (real recordings, copy-synthesis) as one row."""
    t0, c0 = time.perf_counter(), time.process_time()
    if clips:
        result = scorers.score(clips, sample_rate, texts, reference, leave_one_out)
    else:
        result = ScoreResult(errors={s: "no clip to score" for s in scorers.enabled})
    seconds = {**result.seconds, "total": time.perf_counter() - t0}
    cpu_seconds = {**result.cpu_seconds, "total": time.process_time() - c0}
    reference_label = ""
    if reference is not None and "speaker" in scorers.enabled:
        own = ", each clip left out of its own centroid" if leave_one_out else ""
        reference_label = f"{reference.source} ({reference.n_clips} clips{own})"
    audio_seconds = sum(len(c) for c in clips) / sample_rate
    return ListeningRow(name, result, seconds=seconds, cpu_seconds=cpu_seconds, similarity_reference=reference_label,
                        n_clips=len(clips), audio_seconds=audio_seconds, **row)


def score_synthesizer(
    synth: Synthesizer,
    sentences: list[str],
    scorers: Scorers,
    reference: SpeakerReference | None,
    out_dir: str | Path | None = None,
    name: str = "",
    **row: object,
) -> ListeningRow:
    """Synthesize each sentence, write the clips to out_dir (sample_001.wav, ... numbered by
    sentence) when given, and score them. Refused sentences are listed in the row's `refused`
    and skipped. `row` sets the other ListeningRow fields (kind, step, path, ...)."""
    if not sentences:
        raise ValueError("no sentences to synthesize")
    t0, c0 = time.perf_counter(), time.process_time()
    spoken, clips, refused = synthesize_sentences(synth, sentences)
    synthesis_s, synthesis_cpu = time.perf_counter() - t0, time.process_time() - c0
    if out_dir is not None:
        for i, wav in zip(spoken, clips):
            write_wav(Path(out_dir) / RunDir.sample_name(i), wav, synth.sample_rate)
    row.setdefault("sentence_set", f"held-out sentences ({len(sentences)})")
    out = score_clips(name, clips, synth.sample_rate, [sentences[i] for i in spoken], scorers, reference, **row)
    out.refused = refused
    if not clips:
        out.result.errors = {s: f"none of the {len(sentences)} sentences could be synthesized"
                             for s in scorers.enabled}
    out.seconds = {"synthesis": synthesis_s, **out.seconds, "total": time.perf_counter() - t0}
    out.cpu_seconds = {"synthesis": synthesis_cpu, **out.cpu_seconds, "total": time.process_time() - c0}
    return out
