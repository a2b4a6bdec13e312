"""Pre-flight checks before a long run: a pass / warn / fail table with the fix for each fail."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from voxtrain.artifacts.checkpoints import list_checkpoints
from voxtrain.artifacts.disk import run_needs
from voxtrain.artifacts.layout import RunDir
from voxtrain.config import Config
from voxtrain.ops.listing import human_bytes
from voxtrain.versions import versions_line

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str


def estimate_checkpoint_bytes(cfg: Config, n_symbols: int = 200) -> int:
    """Model weights + Adam's two moments, float32, plus a little metadata."""
    import torch

    from voxtrain.model import FastSpeech2

    with torch.device("meta"):
        model = FastSpeech2(cfg.model, n_symbols, cfg.audio.n_mels)
    params = sum(p.numel() for p in model.parameters())
    return params * 4 * 3 + (1 << 20)


def _device_check() -> Check:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        total = torch.cuda.get_device_properties(0).total_memory
        return Check("device", PASS, f"CUDA x{torch.cuda.device_count()}: {names} ({human_bytes(total)})")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Check("device", PASS, "Apple MPS")
    import psutil

    mem = psutil.virtual_memory()
    return Check("device", WARN, f"CPU only: {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
                 f"{human_bytes(mem.available)} free of {human_bytes(mem.total)} RAM; fine for the tiny "
                 f"config and fine-tuning, slow for a full model")


def _features_check(features: Path) -> tuple[Check, object | None]:
    from voxtrain.artifacts.store import FeatureStore, StoreError

    try:
        store = FeatureStore(features)
    except StoreError as err:
        return Check("features", FAIL, str(err)), None
    n_train, n_val = len(store.split_indices("train")), len(store.split_indices("val"))
    stats_ok = all(k in store.stats for k in ("pitch_mean", "pitch_std", "energy_mean", "energy_std"))
    hours = sum(r["seconds"] for r in store.records) / 3600
    status = PASS if stats_ok and n_train else FAIL
    detail = f"{store.root}: {n_train} train / {n_val} val clips, {hours:.2f} h" + ("" if stats_ok else
                                                                                    "; statistics missing")
    if status == PASS and n_val == 0:
        status, detail = WARN, detail + "; no validation split (no validation loss, no best model)"
    return Check("features", status, detail), store


def _resume_check(max_steps: int, run: RunDir) -> Check:
    infos = list_checkpoints(run, verify=True)
    if not infos:
        return Check("resume plan", PASS, f"start fresh at step 0 (target max_steps {max_steps})")
    valid = [i for i in infos if i.valid]
    bad = [i.path.name for i in infos if not i.valid]
    if not valid:
        return Check("resume plan", WARN, f"no valid checkpoint among {len(infos)}; would start fresh. "
                     f"Corrupt: {', '.join(bad)}")
    detail = f"resume from step {valid[-1].step} ({valid[-1].path.name})"
    if bad:
        return Check("resume plan", WARN, f"{detail}; corrupt, skipped: {', '.join(bad)}")
    return Check("resume plan", PASS, detail)


def _finetune_config(cfg: Config, init_from: Path, skip_mismatched: bool) -> tuple[Config, dict | None, Check | None]:
    """The config a fine-tune from `init_from` will really run with, and the base's metadata."""
    from voxtrain.artifacts.checkpoint_format import CheckpointError
    from voxtrain.artifacts.weights import load_weights
    from voxtrain.config import ConfigError
    from voxtrain.config.derive import finetune_config, model_from_checkpoint

    try:
        _, meta = load_weights(Path(init_from))
        saved_model = (meta.get("config") or {}).get("model")
        base = cfg if saved_model is None else model_from_checkpoint(cfg, saved_model, f"--init-from {init_from}",
                                                                     allow_changes=skip_mismatched)
    except (CheckpointError, ConfigError) as err:
        return cfg, None, Check("fine-tune base", FAIL, str(err))
    return finetune_config(base), meta, None


def _existing_parent(run: RunDir) -> Path:
    return run.root if run.root.exists() else next((p for p in run.root.parents if p.exists()), Path("/"))


def _run_dir_check(run: RunDir) -> Check:
    probe = _existing_parent(run)
    if os.access(probe, os.W_OK):
        return Check("run dir", PASS, f"{run.root} writable")
    return Check("run dir", FAIL, f"{probe} is not writable: choose another --run")


def _disk_check(cfg: Config, run: RunDir, per_ckpt: int, extra: int, extra_name: str) -> Check:
    ck = cfg.checkpoint
    need = run_needs(per_ckpt, ck.keep_last, ck.disk_margin_mb) + extra
    free = shutil.disk_usage(_existing_parent(run)).free
    detail = (f"{human_bytes(free)} free; needs ~{human_bytes(need)} = ({ck.keep_last} kept + best + 1 being "
              f"written) x {human_bytes(per_ckpt)} checkpoints + {ck.disk_margin_mb:g} MB margin + {extra_name}")
    return Check("disk", PASS if free >= need else FAIL,
                 detail if free >= need else detail + ": free space or lower checkpoint.keep_last")


def run_preflight(cfg: Config, features: Path, run_dir: Path, init_from: Path | None = None,
                  skip_mismatched: bool = False) -> list[Check]:
    """The pre-flight table; with `init_from` (a fine-tune of a new run) also the fine-tune's plan
    (`skip_mismatched` as `train --skip-mismatched`)."""
    checks = [Check("versions", PASS, versions_line())]
    run = RunDir(run_dir)
    base_meta = None
    if init_from is not None and not run.checkpoint_files():
        cfg, base_meta, failed = _finetune_config(cfg, init_from, skip_mismatched)
        checks += [failed] if failed else []
    checks.append(_device_check())
    checks.append(Check("config", PASS, f"valid; model hidden {cfg.model.hidden}, {cfg.model.encoder_layers}+"
                        f"{cfg.model.decoder_layers} layers; batch {cfg.training.batch_size} x accum "
                        f"{cfg.training.grad_accum}; max_steps {cfg.training.max_steps}"))
    feature_check, store = _features_check(features)
    checks.append(feature_check)
    if store is not None and base_meta is not None:
        from voxtrain.ops.finetune_plan import plan_rows

        checks += [Check(r.name, r.status, r.detail) for r in plan_rows(cfg, store, base_meta, Path(init_from))]
    checks.append(_run_dir_check(run))
    n_symbols = len(store.symbols) if store is not None else 200
    per_ckpt = estimate_checkpoint_bytes(cfg, n_symbols)
    samples = 0 if cfg.training.sample_vocoder == "none" else (
        len(cfg.training.validation_sentences) * cfg.audio.sample_rate * 2 * 8  # ~8 s of 16-bit audio each
    )
    n_val = max(1, cfg.training.max_steps // cfg.training.validate_every)
    checks.append(_disk_check(cfg, run, per_ckpt, n_val * samples, "samples"))
    act = cfg.training.batch_size * 1000 * cfg.model.hidden * 4 * (cfg.model.encoder_layers +
                                                                    cfg.model.decoder_layers) * 12
    checks.append(Check("memory", PASS, f"~{human_bytes(per_ckpt + act)} for weights, optimizer and "
                        f"activations at batch {cfg.training.batch_size} (estimate)"))
    checks.append(_resume_check(cfg.training.max_steps, run))
    return checks


def failed_rows(checks: list[Check]) -> str:
    """The FAIL rows as plain lines: the table folds a long detail (a path) across lines, and
    these are what to copy or grep."""
    return "\n".join(f"  {c.name}: {c.detail}" for c in checks if c.status == FAIL)


def print_preflight(checks: list[Check]) -> bool:
    """Print the table; True when nothing failed."""
    from rich.console import Console
    from rich.table import Table

    colors = {PASS: "green", WARN: "yellow", FAIL: "red"}
    table = Table(title="voxtrain pre-flight")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{colors[c.status]}]{c.status.upper()}[/]", c.detail)
    Console(stderr=True).print(table)
    return all(c.status != FAIL for c in checks)


def _parameter_count(cfg: Config) -> int:
    """Parameters of the bundled HiFi-GAN generator and the configured critic, counted
    without building their weights."""
    import torch

    from voxtrain.vocoder.critics import build_critic
    from voxtrain.vocoder.hifigan import HifiGanGenerator

    v = cfg.vocoder_training
    with torch.device("meta"):
        modules = [HifiGanGenerator()] + ([build_critic(v.critic, v.critic_resolutions)] if v.critic != "none" else [])
        return sum(p.numel() for m in modules for p in m.parameters())


def run_vocoder_preflight(cfg: Config, checkpoint: Path, features: Path, corpus: Path, run_dir: Path) -> list[Check]:
    """The pre-flight table of `train-vocoder`: its inputs checked against each other, the
    starting generator (chosen by ear with `vocoder_training.start: auto`; the run in this
    process reuses the judgement), the disk its checkpoints need, and the resume plan."""
    from voxtrain.errors import VoxtrainError
    from voxtrain.vocoder_training.sources import check_segments, corpus_audio_files, load_acoustic, run_config
    from voxtrain.vocoder_training.start import choose_start

    checks = [Check("versions", PASS, versions_line()), _device_check()]
    feature_check, store = _features_check(features)
    checks.append(feature_check)
    run = RunDir(run_dir)
    if store is not None:
        try:
            acoustic = load_acoustic(checkpoint, store)
            checks.append(Check("acoustic model", PASS, f"{checkpoint}: step {acoustic.meta.get('step')}, the "
                                                        f"store's mel settings and symbols"))
            files = corpus_audio_files(corpus, store)
            checks.append(Check("corpus", PASS, f"{corpus}: the audio of all {len(files)} clips"))
            cfg = run_config(cfg, acoustic, store)
            check_segments(cfg)
            if not run.checkpoint_files():  # a resume continues from its own generator
                checks.append(Check("starting vocoder", PASS, choose_start(store, cfg).describe()))
        except VoxtrainError as err:
            checks.append(Check("inputs", FAIL, str(err)))
    v = cfg.vocoder_training
    checks.append(Check("config", PASS, f"valid; batch {v.batch_size} x {v.segment_frames} frames; lr {v.lr:g}; "
                                        f"max_steps {v.max_steps}; precision {v.precision}"))
    checks.append(_run_dir_check(run))
    parameters = _parameter_count(cfg)  # AdamW keeps two moments of each
    frames = sum(r["n_frames"] for r in store.records) if store is not None else 0
    pairs = frames * (cfg.audio.n_mels + cfg.audio.hop_length) * 4  # teacher-forced mels and audio, float32
    checks.append(_disk_check(cfg, run, parameters * 4 * 3 + (1 << 20), pairs, "the training pairs"))
    checks.append(_resume_check(v.max_steps, run))
    return checks
