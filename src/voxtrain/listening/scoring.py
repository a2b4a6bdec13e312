"""The scorers behind one call: `Scorers.score(clips, ...)` -> `ScoreResult`.

Each scorer loads its model on first use and keeps it. A scorer that fails (its model file
damaged, a clip it cannot take, any bug) costs only its own scores: the result carries what
the others measured and, per failed scorer, the error text, so a trainer can log a warning
and go on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from voxtrain.listening.asr import ASR, ErrorCounts, error_counts, pooled_rates
from voxtrain.listening.common import EVAL_EXTRA, SCORER_RATE, check_installed, to_scorer_rate
from voxtrain.listening.distillmos import INSTALL as DISTILLMOS_INSTALL
from voxtrain.listening.distillmos import DistillMos
from voxtrain.listening.dnsmos import DnsMos
from voxtrain.listening.speaker import SpeakerReference, shared_encoder
from voxtrain.metrics import MEASURED, SCORERS, produces

# The modules each scorer needs (in the `eval` extra, or voxtrain's own dependencies, but for
# distillmos: pip would pull torchaudio with it, so it is installed apart; see listening.distillmos).
NEEDS = {"asr": ("pocketsphinx", "jiwer"), "dnsmos": ("onnxruntime", "speechmos"),
         "distillmos": ("torch", "distillmos"), "speaker": ("torch", "resemblyzer")}
LABELS = {"asr": "ASR", "dnsmos": "DNSMOS", "distillmos": "DistillMOS", "speaker": "speaker similarity"}
# How to install a module that the eval extra does not bring.
INSTALLS = {"distillmos": DISTILLMOS_INSTALL}


@dataclass
class ScoreResult:
    """Scores of a set of clips: `scores` the aggregate per name (WER/CER pooled over clips,
    the others means), `per_clip` each clip's value, `errors` per failed scorer."""

    scores: dict[str, float] = field(default_factory=dict)
    per_clip: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock, per scorer
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # this process's CPU time, per scorer
    transcripts: list[str] = field(default_factory=list)
    counts: list[ErrorCounts] = field(default_factory=list, repr=False)

    @property
    def n_clips(self) -> int:
        return max((len(v) for v in self.per_clip.values()), default=0)

    def subset(self, indices: list[int]) -> dict[str, float]:
        """The aggregate scores of some of the clips (for the noise of a smaller sentence set)."""
        out = {name: float(np.mean([values[i] for i in indices])) for name, values in self.per_clip.items()}
        if self.counts:
            out["wer"], out["cer"] = pooled_rates([self.counts[i] for i in indices])
        return {name: out[name] for name in MEASURED if name in out}

    def to_json(self, per_clip: bool = False) -> dict:
        out: dict = {"scores": {k: round(v, 4) for k, v in self.scores.items()}, "errors": dict(self.errors),
                     "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                     "cpu_seconds": {k: round(v, 3) for k, v in self.cpu_seconds.items()}}
        if per_clip:
            out["per_clip"] = {k: [round(x, 4) for x in v] for k, v in self.per_clip.items()}
            out["transcripts"] = list(self.transcripts)
        return out


class Scorers:
    """The listening scorers to run, each loaded on first use."""

    def __init__(self, scorers: Iterable[str] = SCORERS, threads: int | None = 1) -> None:
        """scorers: which to run, of asr (wer, cer), dnsmos (dnsmos_*), distillmos (distillmos),
        speaker (similarity). threads: onnxruntime's intra-op threads for DNSMOS and torch's for
        DistillMOS (None: every core); the speaker encoder runs on one thread. Raises
        ListeningUnavailable at once when a chosen scorer's package is not installed (nothing
        is loaded until the first score)."""
        chosen = list(scorers)
        unknown = [s for s in chosen if s not in SCORERS]
        if unknown or not chosen:
            raise ValueError(f"unknown or no listening scorers {unknown or chosen!r}: choose from {', '.join(SCORERS)}")
        self.enabled = tuple(s for s in SCORERS if s in chosen)
        for name in self.enabled:
            for module in NEEDS[name]:
                check_installed(module, LABELS[name], INSTALLS.get(module, EVAL_EXTRA))
        self.threads = threads
        self._asr: ASR | None = None
        self._dnsmos: DnsMos | None = None
        self._distillmos: DistillMos | None = None

    @property
    def score_names(self) -> tuple[str, ...]:
        return tuple(n for n in MEASURED if any(n in produces(s) for s in self.enabled))

    def score(
        self,
        clips: list[np.ndarray],
        sample_rate: int,
        texts: list[str],
        reference: SpeakerReference | None = None,
        leave_one_out: bool = False,
    ) -> ScoreResult:
        """Score mono float clips at sample_rate against the texts they should say and the
        speaker they should sound like. leave_one_out: the clips are `reference`'s own clips,
        in order, and each is compared with the centroid of the others."""
        if len(clips) != len(texts):
            raise ValueError(f"{len(clips)} clips but {len(texts)} texts: give one text per clip")
        if not clips:
            raise ValueError("no clips to score")
        if leave_one_out and reference is not None and reference.n_clips != len(clips):
            raise ValueError(f"leave_one_out needs the reference's own {reference.n_clips} clips, got {len(clips)}")
        result = ScoreResult()
        try:
            audio = [to_scorer_rate(c, sample_rate) for c in clips]
        except ValueError as err:  # e.g. NaN samples from a diverged model: no scorer can take them
            result.errors = {name: f"ValueError: {err}" for name in self.enabled}
            return result
        for name in self.enabled:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                getattr(self, f"_run_{name}")(audio, texts, reference, leave_one_out, result)
            except Exception as err:  # one scorer's failure must not lose the others' scores
                result.errors[name] = f"{type(err).__name__}: {err}"
                if name == "asr":  # transcripts without their counts would be half a result
                    result.transcripts, result.counts = [], []
            result.seconds[name] = time.perf_counter() - t0
            result.cpu_seconds[name] = time.process_time() - c0
        for name in MEASURED:
            if name in result.per_clip and name not in result.scores:
                result.scores[name] = float(np.mean(result.per_clip[name]))
        return result

    def _run_asr(self, audio: list[np.ndarray], texts: list[str], reference, loo: bool, result: ScoreResult) -> None:
        if self._asr is None:
            self._asr = ASR()
        result.transcripts = [self._asr.transcribe(a, SCORER_RATE) for a in audio]
        result.counts = [error_counts(t, h) for t, h in zip(texts, result.transcripts)]
        result.per_clip["wer"] = [c.wer for c in result.counts]
        result.per_clip["cer"] = [c.cer for c in result.counts]
        result.scores["wer"], result.scores["cer"] = pooled_rates(result.counts)

    def _run_dnsmos(self, audio: list[np.ndarray], texts, reference, loo: bool, result: ScoreResult) -> None:
        if self._dnsmos is None:
            self._dnsmos = DnsMos(self.threads)
        per = [self._dnsmos.score(a) for a in audio]
        for name in produces("dnsmos"):
            result.per_clip[name] = [p[name] for p in per]

    def _run_distillmos(self, audio: list[np.ndarray], texts, reference, loo: bool, result: ScoreResult) -> None:
        if self._distillmos is None:
            self._distillmos = DistillMos(self.threads)
        result.per_clip["distillmos"] = self._distillmos.score_many(audio)

    def _run_speaker(self, audio: list[np.ndarray], texts, reference: SpeakerReference | None, loo: bool,
                     result: ScoreResult) -> None:
        if reference is None:
            raise ValueError("no speaker reference was given, so no similarity (see listening.speaker_reference)")
        embeddings = shared_encoder().embed_many(audio)
        result.per_clip["similarity"] = [
            reference.similarity(e, i if loo else None) for i, e in enumerate(embeddings)
        ]
