"""What a run measures besides its losses, and what it does with the measurements: the
listening evaluation, the metrics that targets, early stop and the best checkpoint may
name, and which way each of them improves."""

from __future__ import annotations

from pydantic import Field, model_validator

from voxtrain.config.base import _Section
from voxtrain.metrics import (  # noqa: F401  (re-exported: the config's vocabulary)
    VALIDATION_TERMS,
    Direction,
    Scorer,
    metric_direction,
    metric_names,
    metric_scorer,
    scorer_summary,
)


class EvaluationConfig(_Section):
    """Listening scores of the voice during training (needs the `eval` extra): rank 0
    synthesizes held-out sentences with the current weights and the sample vocoder, and
    scores them for intelligibility (pocketsphinx WER/CER), naturalness (DNSMOS P.835 and
    P.808, DistillMOS) and similarity to the training speaker (GE2E, against the HiFi-GAN
    copy-synthesis of the validation clips); DistillMOS when `scorers` names it. Without the
    extra (or distillmos, installed apart, when named) the run warns once and goes on with
    loss-based decisions."""

    enabled: bool = Field(True, description="Score the voice at the evaluation cadence.")
    every: int | None = Field(
        None, ge=1,
        description="Steps between evaluations; a multiple of training.validate_every. Unset: every validation.",
    )
    sentences: int = Field(
        8, ge=1, description="How many held-out sentences each evaluation synthesizes (the first N of the list)."
    )
    sentences_file: str | None = Field(
        None, description="Text file of held-out sentences, one per line (# comments). Unset: voxtrain's own list."
    )
    scorers: list[Scorer] = Field(
        # DistillMOS is opt-in: it is installed apart from the eval extra (see docs/LISTENING.md),
        # and a default that a plain `pip install voxtrain[eval]` lacks would turn scoring off.
        default_factory=lambda: ["asr", "dnsmos", "speaker"],
        description=f"Scorers to run: {scorer_summary()}.",
    )
    reference_clips: int = Field(
        8, ge=1, description="Validation clips whose copy-synthesis makes the speaker reference (centroid)."
    )

    def logs(self, metric: str) -> bool:
        """Whether a run with this evaluation records `metric` at all."""
        if not metric.startswith("val_") and not self.enabled:
            return False
        if metric == "composite":
            return bool(self.scorers)
        scorer = metric_scorer(metric)
        return scorer is None or scorer in self.scorers


class TargetSpec(_Section):
    """A threshold on a metric; the direction defaults to the metric's own (wer below, similarity above)."""

    value: float = Field(description="The threshold.")
    direction: Direction | None = Field(None, description="below or above; unset: the way the metric improves.")


class EarlyStopConfig(_Section):
    """Stop a run whose metric has stopped improving."""

    metric: str = Field("val_mel", description="The metric watched (a validation loss or a listening score).")
    patience: int = Field(5, ge=1, description="Evaluations in a row without an improvement before the run stops.")
    min_delta: float = Field(
        0.0, ge=0, description="An improvement smaller than this (in the metric's units) does not count."
    )

    @model_validator(mode="after")
    def _known_metric(self) -> EarlyStopConfig:
        metric_direction(self.metric)
        return self
