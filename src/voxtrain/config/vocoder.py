"""The `vocoder_training:` section: fine-tuning the HiFi-GAN generator to a new speaker."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxtrain.config.base import _Section


class VocoderTrainingConfig(_Section):
    """`voxtrain train-vocoder`: the bundled HiFi-GAN generator trained on the acoustic model's
    own teacher-forced mels against the real audio. Checkpoint rotation and the disk margin
    come from the `checkpoint:` section, the experiment trackers from `training.trackers`."""

    max_steps: int = Field(2000, ge=1, description="Optimizer steps of the fine-tune.")
    batch_size: int = Field(4, ge=1, description="Segments per optimizer step.")
    segment_frames: int = Field(
        32, ge=1,
        description="Mel frames per training segment (times audio.hop_length samples: 32 -> 8192 at hop 256). "
        "Clips shorter than a segment are padded with silence.",
    )
    lr: float = Field(
        1e-4, gt=0,
        description="Constant learning rate. Half of HiFi-GAN's own 2e-4, which (without its discriminators) "
        "raised the validation mel error for the first 40 steps of a fine-tune. On 20 clips, 1e-4 rendered the "
        "speaker's held-out real mels 0.08-0.10 DNSMOS OVRL closer to the real clips than 2e-5 did "
        "(bench/vocoder_ceiling.py, after 100 and 200 steps).",
    )
    betas: tuple[float, float] = Field((0.8, 0.99), description="AdamW betas (HiFi-GAN's own).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (torch's default, as HiFi-GAN uses).")
    mel_weight: float = Field(1.0, ge=0, description="Weight of the L1 log-mel loss.")
    stft_weight: float = Field(
        1.0, ge=0, description="Weight of the multi-resolution STFT loss (spectral convergence + log magnitude)."
    )
    stft_resolutions: list[tuple[int, int, int]] = Field(
        default_factory=lambda: [(1024, 120, 600), (2048, 240, 1200), (512, 50, 240)],
        description="(n_fft, hop, window) of each STFT resolution of the STFT loss.",
    )
    log_every: int = Field(10, ge=1, description="Steps between train records in metrics.jsonl.")
    validate_every: int = Field(
        200, ge=1, description="Steps between validations (mel L1 of the whole validation clips) and best exports."
    )
    save_every: int = Field(200, ge=1, description="Steps between checkpoints.")
    seed: int = Field(1234, description="Seed of the segment order and positions.")
    grad_clip: float = Field(
        0.0, ge=0, description="Max global gradient norm (0: measured, never clipped, as HiFi-GAN trains)."
    )
    max_nonfinite_steps: int = Field(
        20, ge=1, description="Consecutive NaN/Inf steps (each skipped) after which the run saves and stops."
    )
    start: Literal["auto", "ljspeech", "universal"] = Field(
        "auto",
        description="The bundled HiFi-GAN generator a fine-tune starts from: ljspeech (one speaker), universal (many "
        "speakers), or auto: chosen by ear, the one whose copy-synthesis of start_clips of the speaker's own clips "
        "DNSMOS OVRL rates higher (ljspeech when the eval extra is missing). Pre-flight says which.",
    )
    start_clips: int = Field(4, ge=1, description="Training clips the auto start is judged on.")
    # spectral: against reconstruction losses alone it won by every ear, on the demo voice and on
    # a 20-clip phase 2 (docs/NATURALNESS.md).
    critic: Literal["none", "spectral", "hifigan"] = Field(
        "spectral",
        description="Adversarial training: none (reconstruction losses only), spectral (a small multi-resolution "
        "spectrogram critic, CPU-sized) or hifigan (the paper's multi-period and multi-scale critics, GPU-sized).",
    )
    critic_from: str | None = Field(
        None, description="A train-vocoder checkpoint (.pt) whose critic a fresh run starts from, instead of a "
        "fresh critic: one vocoder run (the demo voice's, say) can seed every later fine-tune. Same critic kind "
        "and settings; with a trained critic, critic_warmup_steps can be 0.",
    )
    critic_lr: float = Field(2e-4, gt=0, description="Constant learning rate of the critic (AdamW, the generator's "
                             "betas and weight decay).")
    critic_resolutions: list[tuple[int, int, int]] = Field(
        default_factory=lambda: [(512, 128, 512), (1024, 256, 1024), (2048, 512, 2048)],
        description="(n_fft, hop, window) of each spectrogram the spectral critic reads.",
    )
    critic_warmup_steps: int = Field(
        200, ge=0, description="Steps a fresh critic trains before its losses reach the generator: until then it "
        "only adds noise.",
    )
    adversarial_ramp_steps: int = Field(
        200, ge=0, description="Steps over which the adversarial and feature-matching weights rise linearly to "
        "their values after the warm-up.",
    )
    # HiFi-GAN weighs its losses 45 (L1 log-mel) : 1 (adversarial) : 2 (feature matching); with
    # mel_weight 1 the same balance is 1/45 and 2/45. Weights of 1 and 2 against mel_weight 1
    # let a small, young critic drown the mel loss: measured, the voice got worse by every ear.
    adversarial_weight: float = Field(1 / 45, ge=0, description="Weight of the generator's least-squares "
                                      "adversarial loss (HiFi-GAN's 1 against its mel weight of 45).")
    feature_weight: float = Field(2 / 45, ge=0, description="Weight of the feature-matching loss (HiFi-GAN's 2 "
                                  "against its mel weight of 45).")
    joint: bool = Field(
        False, description="Fine-tune the acoustic model with the generator (JETS-style): each step renders the "
        "acoustic model's own teacher-forced mel, and the waveform losses train both models. The best voice then "
        "holds the jointly trained acoustic weights beside the generator.",
    )
    joint_lr: float = Field(2e-4, gt=0, description="With joint: the acoustic model's constant learning rate "
                            "(a fine-tune's, configs/finetune.yaml).")
    joint_acoustic_weight: float = Field(
        1.0, ge=0, description="With joint: weight of the acoustic model's own FastSpeech2 losses (mel, duration, "
        "pitch, energy, aligner) beside the waveform losses.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32: the generator was made and measured in it; auto = bf16 where supported."
    )

    @model_validator(mode="after")
    def _check(self) -> VocoderTrainingConfig:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        for n_fft, hop, win in self.stft_resolutions:
            if not (0 < hop and 0 < win <= n_fft):
                raise ValueError(f"stft_resolutions: ({n_fft}, {hop}, {win}) needs hop > 0 and 0 < window <= n_fft")
        if self.mel_weight == 0 and (self.stft_weight == 0 or not self.stft_resolutions):
            raise ValueError("mel_weight and stft_weight are both 0: nothing to train on")
        return self
