"""Listening scores: objective measures of what a voice sounds like, all offline.

- intelligibility: word and character error rate of what pocketsphinx hears (`wer`, `cer`);
- naturalness proxy: DNSMOS P.835 (`dnsmos_ovrl`, `dnsmos_sig`, `dnsmos_bak`), DNSMOS P.808
  (`dnsmos_p808`) and DistillMOS (`distillmos`);
- speaker similarity: cosine of GE2E embeddings to a reference centroid (`similarity`).

Lower is better for wer and cer, higher for the rest (the names, scorers and directions are
`voxtrain.metrics.SCORES`). The scorers' models come inside the packages of the `eval` extra
(pocketsphinx, speechmos, resemblyzer) and distillmos (installed apart, without its
dependencies: see `listening.distillmos`); nothing is downloaded. Without them,
`Scorers(...)` raises `ListeningUnavailable`.

    scorers = Scorers()
    reference = speaker_reference(reference_clips, 22050)
    row = score_synthesizer(synth, default_sentences()[:8], scorers, reference)
    row.scores   # {"wer": 0.19, "cer": 0.08, "dnsmos_ovrl": 3.0, ..., "similarity": 0.92}
    row.errors   # {} or {"dnsmos": "..."} for a scorer that failed
"""

from voxtrain.listening.asr import ASR, char_error_rate, word_error_rate, words_for_wer
from voxtrain.listening.common import ListeningUnavailable
from voxtrain.listening.composite import ANCHORS, composite_score
from voxtrain.listening.references import ReferenceClipsError, reference_rows, validation_reference
from voxtrain.listening.runs import Evaluation, evaluate_checkpoint, evaluate_run
from voxtrain.listening.scoring import ScoreResult, Scorers
from voxtrain.listening.sentences import SentenceError, default_sentences, read_sentences
from voxtrain.listening.speaker import SpeakerReference, speaker_reference
from voxtrain.listening.synthesis import ListeningRow, Refusal, score_clips, score_synthesizer

__all__ = [
    "ANCHORS", "ASR", "Evaluation", "ListeningRow",
    "ListeningUnavailable", "Refusal", "ReferenceClipsError", "ScoreResult", "Scorers", "SentenceError",
    "SpeakerReference", "char_error_rate", "composite_score", "default_sentences", "evaluate_checkpoint",
    "evaluate_run", "read_sentences", "reference_rows", "score_clips", "score_synthesizer", "speaker_reference",
    "validation_reference", "word_error_rate", "words_for_wer",
]
