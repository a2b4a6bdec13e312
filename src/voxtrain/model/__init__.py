"""FastSpeech2 acoustic model with a learned aligner, and its training loss."""

from voxtrain.model.batch import Batch
from voxtrain.model.fastspeech2 import FastSpeech2, count_parameters
from voxtrain.model.losses import FastSpeech2Loss
from voxtrain.model.mas import durations_from_alignment, monotonic_alignment_search

__all__ = [
    "Batch",
    "FastSpeech2",
    "FastSpeech2Loss",
    "count_parameters",
    "durations_from_alignment",
    "monotonic_alignment_search",
]
