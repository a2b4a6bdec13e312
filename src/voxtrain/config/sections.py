"""The sections of a run's configuration that describe data, model, training and checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxtrain.config.base import _Section
from voxtrain.config.scoring import EarlyStopConfig, TargetSpec


class AudioConfig(_Section):
    """Waveform and feature conventions. The mel settings follow HiFi-GAN exactly so the
    pretrained vocoder can render our mels; change them only with a vocoder trained to match."""

    sample_rate: int = Field(22050, gt=0, description="Target sample rate in Hz; input is resampled to it.")
    n_fft: int = Field(1024, gt=0, description="FFT size of the STFT.")
    win_length: int = Field(1024, gt=0, description="Hann window length in samples.")
    hop_length: int = Field(256, gt=0, description="Samples between mel frames.")
    n_mels: int = Field(80, gt=0, description="Number of mel bands.")
    fmin: float = Field(0.0, ge=0, description="Lowest mel filter frequency in Hz.")
    fmax: float = Field(8000.0, gt=0, description="Highest mel filter frequency in Hz.")
    trim_silence: bool = Field(True, description="Trim leading and trailing silence before features.")
    trim_top_db: float = Field(40.0, gt=0, description="Frames quieter than peak minus this many dB count as silence.")
    min_seconds: float = Field(0.5, ge=0, description="Clips shorter than this (after trimming) are rejected.")
    max_seconds: float = Field(15.0, gt=0, description="Clips longer than this (after trimming) are rejected.")
    pitch_floor: float = Field(71.0, gt=0, description="Lowest F0 searched by the pitch tracker, Hz.")
    pitch_ceil: float = Field(800.0, gt=0, description="Highest F0 searched by the pitch tracker, Hz.")

    @model_validator(mode="after")
    def _check_ranges(self) -> AudioConfig:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax ({self.fmax}) must be <= sample_rate/2 ({self.sample_rate / 2})")
        if self.min_seconds >= self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) must be < max_seconds ({self.max_seconds})")
        if self.pitch_floor >= self.pitch_ceil:
            raise ValueError("pitch_floor must be < pitch_ceil")
        return self


class TextConfig(_Section):
    """Text front end: normalization and grapheme-to-phoneme conversion."""

    language: str = Field("en-us", description="espeak-ng language code used by phonemizer.")
    keep_punctuation: bool = Field(True, description="Keep punctuation marks as symbols (they carry prosody).")
    keep_stress: bool = Field(True, description="Keep IPA primary/secondary stress marks.")


class DataConfig(_Section):
    """How a prepared feature store is split and loaded."""

    val_size: int = Field(46, ge=1, description="Number of clips held out for validation (seeded split).")
    split_seed: int = Field(1234, description="Seed of the deterministic train/validation split.")
    shard_size: int = Field(256, ge=1, description="Clips per storage shard written by prepare.")
    num_workers: int = Field(1, ge=0, description="DataLoader worker processes during training.")


class AlignerConfig(_Section):
    """Learned alignment (Badlani et al. 2021): no external forced aligner needed."""

    attention_dim: int = Field(80, gt=0, description="Width of the alignment encoder's key/query space.")
    temperature: float = Field(0.0005, gt=0, description="Softmax temperature of the alignment distances.")
    prior_scaling: float = Field(1.0, gt=0, description="Scaling of the beta-binomial alignment prior.")
    binarization_start_step: int = Field(2000, ge=0, description="Step at which the binarization loss starts.")
    binarization_ramp_steps: int = Field(2000, ge=0, description="Steps over which the binarization weight ramps to 1.")


class ModelConfig(_Section):
    """FastSpeech2 architecture."""

    hidden: int = Field(256, gt=0, description="Width of encoder and decoder.")
    encoder_layers: int = Field(4, ge=1, description="FFT blocks in the encoder.")
    decoder_layers: int = Field(4, ge=1, description="FFT blocks in the decoder.")
    heads: int = Field(4, ge=1, description="Attention heads per FFT block.")
    conv_filter: int = Field(1024, gt=0, description="Inner width of the convolutional feed-forward.")
    conv_kernel: int = Field(9, ge=1, description="Kernel size of the convolutional feed-forward.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout inside the FFT blocks.")
    attention_dropout: float = Field(
        0.0, ge=0, lt=1,
        description="Dropout on attention weights (FastSpeech2's reference uses 0.1). Off by default: any "
        "value > 0 sends attention through PyTorch's unfused dropout path, ~1.2x slower steps on CPU.",
    )
    predictor_layers: int = Field(2, ge=1, description="Conv layers of the duration/pitch/energy predictors.")
    predictor_filter: int = Field(256, gt=0, description="Channels of the variance predictors.")
    predictor_kernel: int = Field(3, ge=1, description="Kernel size of the variance predictors.")
    predictor_dropout: float = Field(0.5, ge=0, lt=1, description="Dropout in the variance predictors.")
    variance_embedding_kernel: int = Field(9, ge=1, description="Kernel of the conv embedding pitch/energy.")
    postnet_layers: int = Field(0, ge=0, description="Conv postnet layers after the mel head (0 = no postnet).")
    postnet_channels: int = Field(512, gt=0, description="Channels of the postnet.")
    mel_mixture: int = Field(
        1, ge=1, le=8,
        description="Laplace components the decoder predicts per mel bin, trained by their negative "
        "log-likelihood instead of training.mel_loss, so a bin with two plausible values is not pulled to "
        "their blurred mean (Ren et al. 2022); synthesis speaks the location of the most probable component. "
        "1 = a plain mel head trained with training.mel_loss.",
    )
    max_positions: int = Field(4000, gt=0, description="Longest sequence the positional table covers.")
    aligner: AlignerConfig = Field(default_factory=AlignerConfig)

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


# Model settings that change how the model trains, not the shapes or meaning of its weights.
# A resume or a fine-tune takes the architecture from its checkpoint, but may set these.
TRAINING_BEHAVIOUR_FIELDS = (
    "dropout", "attention_dropout", "predictor_dropout",
    "aligner.temperature", "aligner.prior_scaling", "aligner.binarization_start_step",
    "aligner.binarization_ramp_steps",
)


class LossWeights(_Section):
    mel: float = Field(1.0, ge=0, description="Weight of the mel reconstruction loss.")
    duration: float = Field(0.1, ge=0, description="Weight of the log-duration loss.")
    pitch: float = Field(0.1, ge=0, description="Weight of the phoneme-level pitch loss.")
    energy: float = Field(0.1, ge=0, description="Weight of the phoneme-level energy loss.")
    forward_sum: float = Field(1.0, ge=0, description="Weight of the aligner's forward-sum (CTC) loss.")
    binarization: float = Field(1.0, ge=0, description="Final weight of the binarization loss (ramped in).")


class AdversarialConfig(_Section):
    """A mel critic for the acoustic model (GANSpeech): off by default until the listening
    scores show it wins."""

    critic: Literal["none", "mel"] = Field("none", description="none, or mel: a small critic of mel windows.")
    lr: float = Field(1e-4, gt=0, description="Constant learning rate of the critic (the training optimizer's kind).")
    frames: int = Field(32, ge=4, description="Mel frames of each window the critic reads (one per clip).")
    channels: int = Field(32, ge=1, description="Channels of the critic's convolutions.")
    warmup_steps: int = Field(
        500, ge=0, description="Steps a fresh critic trains before its losses reach the model.")
    ramp_steps: int = Field(500, ge=0, description="Steps over which the adversarial weights then rise to full.")
    weight: float = Field(0.1, ge=0, description="Weight of the model's least-squares adversarial loss.")
    feature_weight: float = Field(1.0, ge=0, description="Weight of the feature-matching loss.")


class TrainingConfig(_Section):
    """Optimisation and the training loop's cadence. A "step" is always an optimizer step."""

    max_steps: int = Field(200_000, ge=1, description="Length of the schedule; the LR schedule follows it.")
    batch_size: int = Field(16, ge=1, description="Utterances per micro-batch per process.")
    batch_frames: int = Field(
        0, ge=0, description="If > 0, batches are filled by total mel frames up to this cap instead of batch_size."
    )
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated into one optimizer step.")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="Optimizer.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    eps: float = Field(1e-9, gt=0, description="Adam epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Max global gradient norm (0 disables clipping).")
    scheduler: Literal["noam", "constant", "warmup_cosine"] = Field("noam", description="LR schedule.")
    warmup_steps: int = Field(4000, ge=0, description="Warm-up steps of the schedule.")
    mel_loss: Literal["l1", "mse"] = Field("l1", description="Mel reconstruction loss.")
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 where supported (CUDA with bf16, CPU), else fp32."
    )
    seed: int = Field(1234, description="Seed of weights init, data order and dropout.")
    log_every: int = Field(100, ge=1, description="Steps between metrics records.")
    validate_every: int = Field(1000, ge=1, description="Steps between validation passes and samples.")
    save_every: int = Field(5000, ge=1, description="Steps between checkpoints.")
    max_nonfinite_steps: int = Field(
        20, ge=1, description="Consecutive NaN/Inf steps after which the run saves and stops."
    )
    sample_vocoder: Literal["hifigan", "griffin-lim", "none"] = Field(
        "hifigan", description="Vocoder that renders validation samples (none = mels only)."
    )
    validation_sentences: list[str] = Field(
        default_factory=lambda: [
            "The quick brown fox jumps over the lazy dog.",
            "How much wood would a woodchuck chuck, if a woodchuck could chuck wood?",
        ],
        description="Sentences synthesized to samples/ at every validation.",
    )
    # The trackers Accelerate knows (`accelerate.tracking.LOGGER_TYPE_TO_CLASS`; a test keeps the two
    # equal), named here so that a config loads without importing accelerate and torch.
    trackers: list[
        Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio"]
    ] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Experiment trackers (Accelerate's) that get the run's scalars, images, audio and resolved "
        "config; metrics.jsonl is written whatever this says. One that cannot start is a warning, not a dead "
        "run. wandb and mlflow: pip install 'voxtrain[trackers]'.",
    )
    tracker_project: str = Field(
        "voxtrain", min_length=1,
        description="W&B project / MLflow experiment the run is filed under (the run is named after its directory).",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. Unset: $MLFLOW_TRACKING_URI if set, else a local file store in RUN/mlruns.",
    )
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="W&B mode. offline writes RUN/wandb only (upload later with `wandb sync`)."
    )
    targets: dict[str, float | TargetSpec] = Field(
        default_factory=dict,
        description="Thresholds on logged metrics, e.g. {wer: 0.10, similarity: 0.80, val_mel: 0.50}: once every "
        "one holds on targets_hold evaluations in a row, the run saves and exits 0 (\"targets reached\").",
    )
    targets_hold: int = Field(
        2, ge=1, description="Evaluations in a row on which every target must hold, so one lucky score does not "
        "end a run.",
    )
    early_stop: EarlyStopConfig | None = Field(
        None, description="Stop when a metric has not improved for a number of evaluations (unset: never)."
    )
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)

    def target_specs(self) -> dict[str, tuple[float, str]]:
        """Every target as metric -> (threshold, direction)."""
        from voxtrain.config.scoring import metric_direction

        specs = {}
        for metric, spec in self.targets.items():
            if isinstance(spec, TargetSpec):
                specs[metric] = (spec.value, spec.direction or metric_direction(metric))
            else:
                specs[metric] = (float(spec), metric_direction(metric))
        return specs

    @model_validator(mode="after")
    def _check_betas(self) -> TrainingConfig:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        return self

    @model_validator(mode="after")
    def _check_trackers(self) -> TrainingConfig:
        repeated = sorted({t for t in self.trackers if self.trackers.count(t) > 1})
        if repeated:
            raise ValueError(f"trackers lists {', '.join(repeated)} more than once")
        return self


class CheckpointConfig(_Section):
    """Checkpoint rotation and disk guard."""

    keep_last: int = Field(3, ge=1, description="Newest checkpoints kept besides the best one.")
    keep_best: bool = Field(True, description="Keep (and export) the best checkpoint by best_by.")
    best_by: str = Field(
        "val_mel",
        description="What makes a checkpoint the best: val_mel, any listening score (wer, similarity, "
        "dnsmos_ovrl, ...) or composite. An evaluation whose score is missing (scorer failed) is judged by "
        "val_mel.",
    )
    disk_margin_mb: float = Field(256.0, ge=0, description="Free space kept beyond a checkpoint's size, MB.")
    max_skipped_without_checkpoint: int = Field(
        3, ge=1,
        description="A run with no checkpoint on disk stops (exit 4) after this many saves in a row were "
        "skipped for lack of space, instead of training on with nothing to resume from.",
    )


# The parts of FastSpeech2 that `finetune.freeze` can name; model/parts.py maps each to its modules.
FreezablePart = Literal["embedding", "encoder", "aligner", "variance_adaptor", "decoder", "postnet"]


class FinetuneConfig(_Section):
    """Phase-2 settings applied when training starts with --init-from."""

    lr: float = Field(
        2e-4, gt=0,
        description="Constant LR of a fine-tune (no warm-up re-run). 2e-4 adapted the demo voice to a new speaker "
        "from 20 clips in 300 steps (bench/finetune.py); 10x lower barely moves it in that time.",
    )
    scheduler: Literal["noam", "constant", "warmup_cosine"] = Field("constant", description="Fine-tune schedule.")
    freeze: list[FreezablePart] = Field(
        default_factory=list,
        description="Parts kept fixed during the fine-tune: embedding, encoder, aligner, variance_adaptor "
        "(duration, pitch and energy predictors and embeddings), decoder (with the mel head), postnet.",
    )
    keep_last: int = Field(
        1, ge=1,
        description="Rotation checkpoints a fine-tune keeps besides the best one (replaces checkpoint.keep_last: "
        "a fine-tune is short, and its base is the other copy worth keeping).",
    )
    new_symbols: bool = Field(
        False,
        description="Allow the new data to use symbols the base never trained: they get fresh embedding rows, "
        "shared symbols keep theirs. Off: such data is refused, naming each symbol.",
    )

    # `voxtrain finetune`'s time budget (docs/FINETUNE.md has the measurements behind them).
    budget_minutes: float = Field(
        10.0, gt=0, description="voxtrain finetune: wall-clock minutes for the whole pipeline (--budget).")
    acoustic_share: float = Field(
        0.3, gt=0, lt=1,
        description="voxtrain finetune: the acoustic stage's share of the training time; the vocoder stage gets "
        "the rest, and whatever the acoustic stage leaves.",
    )
    min_budget_minutes: float = Field(
        4.0, gt=0, description="voxtrain finetune: budgets below this are refused before any work.")
    min_audio_seconds: float = Field(
        15.0, gt=0, description="voxtrain finetune: less training audio than this is refused, with how much there is.")
    reserve_seconds: float = Field(
        30.0, ge=0, description="voxtrain finetune: time kept back for writing the voice (and its ONNX export).")

    @model_validator(mode="after")
    def _check_freeze(self) -> FinetuneConfig:
        repeated = sorted({p for p in self.freeze if self.freeze.count(p) > 1})
        if repeated:
            raise ValueError(f"freeze lists {', '.join(repeated)} more than once")
        return self
