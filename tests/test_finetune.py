"""Phase 2 on real micro runs: freezing, new symbols, the fine-tune's plan, and a fine-tune on a
real small filesystem that fills."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import MICRO_CONFIG, Hog, Trainer, _env, initial_weights, wait_event, write_config
from voxtrain.artifacts.checkpoints import load_state, verify_checkpoint
from voxtrain.artifacts.layout import RunDir
from voxtrain.model.parts import EMBEDDING_WEIGHT, part_of, remap_embedding
from voxtrain.text.symbols import SymbolTable

# Words whose phonemes the micro corpus (14 espeak sentences, seed 3) never uses: ŋ, ʔ and the
# syllabic mark of n̩.
NEW_SYMBOL_SENTENCES = ["The king was singing a long song.", "Bring the strong rings along.",
                        "Thanks, it is a button.", "Swing the hanging lanterns."]


@pytest.fixture(scope="module")
def base_ckpt(features, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ft_base")
    t = Trainer(features, tmp / "run", write_config(tmp / "c.yaml", training={"save_every": 4, "max_steps": 4}))
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    return RunDir(t.run).checkpoint(4)


@pytest.fixture(scope="module")
def new_symbol_store(tmp_path_factory) -> Path:
    """A real store whose clips use symbols the base never trained."""
    from voxtrain.config import config_from_dict
    from voxtrain.data import prepare_corpus
    from voxtrain.demo_corpus import make_corpus

    tmp = tmp_path_factory.mktemp("new_symbols")
    make_corpus(tmp / "corpus", voice="espeak", sentences=NEW_SYMBOL_SENTENCES, progress=False)
    prepare_corpus(tmp / "corpus", tmp / "features", config_from_dict(MICRO_CONFIG), workers=1, progress=False)
    return tmp / "features"


def _wide_env() -> dict:
    # Wide enough that pre-flight's table never folds a message across lines.
    return dict(_env(), COLUMNS="400")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_freeze_trains_exactly_the_named_parts(trainer_factory, base_ckpt):
    frozen_parts = {"embedding", "encoder", "aligner"}
    ft = trainer_factory("freeze", training={"max_steps": 3, "save_every": 3},
                         finetune={"lr": 1e-3, "freeze": sorted(frozen_parts)})
    r = ft.run_to_end("--init-from", str(base_ckpt))
    assert r.returncode == 0, r.stderr
    before = load_state(base_ckpt)["model"]
    state = load_state(RunDir(ft.run).checkpoint(3))
    after = state["model"]
    frozen = {n for n in before if part_of(n) in frozen_parts}
    assert frozen and len(frozen) < len(before)
    for name, tensor in before.items():
        if name in frozen:
            assert torch.equal(after[name], tensor), f"{name} is frozen but changed"
        else:
            assert not torch.equal(after[name], tensor), f"{name} should train but did not move"
    trainable = sum(after[n].numel() for n in after if n not in frozen)
    start = next(e for e in ft.metrics() if e["type"] == "event" and e["event"] == "start")
    assert start["trainable_parameters"] == trainable
    assert start["parameters"] == sum(t.numel() for t in after.values())
    assert f"{trainable / 1e6:.2f} M of" in r.stderr and "frozen: embedding, encoder, aligner" in r.stderr
    # The optimizer holds state for the trained tensors only.
    assert len(state["optimizers"]["model"]["state"]) == len(before) - len(frozen)


def test_a_symbol_the_base_never_learned_is_refused_then_given_fresh_rows(base_ckpt, new_symbol_store, tmp_path):
    # Another seed than the base's: a fresh row then differs from the base's own (untrained) initial row.
    cfg = write_config(tmp_path / "c.yaml", training={"max_steps": 2, "save_every": 2, "seed": 7},
                       finetune={"lr": 1e-12})
    refused = Trainer(new_symbol_store, tmp_path / "refused", cfg)
    r = refused.run_to_end("--init-from", str(base_ckpt), env=_wide_env())
    assert r.returncode == 1
    assert "'ŋ' (U+014B LATIN SMALL LETTER ENG)" in r.stderr and "never trained by the base" in r.stderr
    assert "--new-symbols" in r.stderr
    assert not RunDir(refused.run).checkpoint_files()
    # Python callers skip the CLI's pre-flight: the session refuses on its own.
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.config import load_config
    from voxtrain.train.session import SessionError, TrainOptions, prepare_session

    opts = TrainOptions(tmp_path / "api", new_symbol_store, load_config(cfg), init_from=base_ckpt)
    with pytest.raises(SessionError, match="'ŋ' .U\\+014B LATIN SMALL LETTER ENG.: 2 clip.s., never trained"):
        prepare_session(opts, FeatureStore(new_symbol_store), latest=None)

    # With the flag: the new symbols' rows start fresh, the shared ones keep the base's (an LR of
    # 1e-12 leaves every weight where it started, within 1e-9).
    ft = Trainer(new_symbol_store, tmp_path / "accepted", cfg)
    r = ft.run_to_end("--init-from", str(base_ckpt), "--new-symbols")
    assert r.returncode == 0, r.stderr
    state = load_state(RunDir(ft.run).checkpoint(2))
    table = SymbolTable.from_dict(state["symbols"])
    got = state["model"][EMBEDDING_WEIGHT]
    base_rows = load_state(base_ckpt)["model"][EMBEDDING_WEIGHT]
    fresh_rows = initial_weights(state)[EMBEDDING_WEIGHT]
    base_clips = load_state(base_ckpt)["symbol_clips"]
    new = [s for s in state["symbol_clips"] if s not in base_clips]
    assert "ŋ" in new and "ʔ" in new
    for symbol in new:
        i = table.symbols.index(symbol)
        assert torch.allclose(got[i], fresh_rows[i], atol=1e-9) and not torch.allclose(got[i], base_rows[i])
    for symbol in base_clips:
        i = table.symbols.index(symbol)
        assert torch.allclose(got[i], base_rows[i], atol=1e-9), symbol
    # The fine-tuned weights now count the new symbols as learned, for the next fine-tune.
    assert state["symbol_clips"]["ŋ"] >= 1 and state["symbol_clips"]["ð"] > base_clips["ð"]


def test_embedding_rows_follow_their_symbol_across_tables():
    # A base saved with an older table (no boundary symbols) and in another order than the new one.
    new = SymbolTable.default()
    old_symbols = [s for s in new.symbols if s not in ("^", "$")]
    old_symbols[30:40] = reversed(old_symbols[30:40])
    old = SymbolTable(old_symbols)
    base = torch.randn(len(old), 8)
    fresh = torch.randn(len(new), 8)
    out, given_fresh = remap_embedding(base, old, new, fresh, fresh_symbols={"ŋ"})
    assert sorted(given_fresh) == sorted(["ŋ", "^", "$"])
    for i, symbol in enumerate(new.symbols):
        want = fresh[i] if symbol in given_fresh else base[old.symbols.index(symbol)]
        assert torch.equal(out[i], want), symbol


def _preflight(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtrain.cli", "preflight", *args], env=_wide_env(),
                          capture_output=True, text=True, timeout=120)


def test_preflight_plans_a_finetune_from_its_data(base_ckpt, new_symbol_store, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", training={"batch_size": 16, "grad_accum": 1})
    r = _preflight("--features", str(new_symbol_store), "--run", str(tmp_path / "run"), "--config", str(cfg),
                   "--init-from", str(base_ckpt))
    out = " ".join(r.stderr.split())
    assert r.returncode == 1, out
    assert "fine-tune data │ PASS │ 2 train clips" in out
    assert "covers more than the 2 train clips" in out and "lower training.batch_size to at most 2" in out
    assert "budget │ PASS │ recommended acoustic model:" in out
    assert "symbols │ FAIL" in out and "'ŋ'" in out
    assert "only 2 validation clips" in out
    # A fine-tune keeps 1 rotation checkpoint (finetune.keep_last), not checkpoint.keep_last's 2.
    assert "(1 kept + best + 1 being written)" in out
    r = _preflight("--features", str(new_symbol_store), "--run", str(tmp_path / "run"), "--config", str(cfg),
                   "--init-from", str(base_ckpt), "--new-symbols")
    out = " ".join(r.stderr.split())
    assert r.returncode == 0, out
    assert "symbols │ WARN" in out and "get fresh embedding rows" in out


def test_finetune_on_a_filling_small_filesystem_keeps_best_and_newest_and_resumes(
        trainer_factory, base_ckpt, small_fs, env):
    base_hash = _sha256(base_ckpt)
    # An LR of 1e-12 keeps val_mel where it was, so the best stays the first validation (step 2)
    # while newer checkpoints pile up: the pruning under disk pressure must spare that old one.
    ft = trainer_factory("fill", training={"save_every": 1, "validate_every": 2, "max_steps": 100000},
                         finetune={"lr": 1e-12})
    ft.run = small_fs / "run"
    run = RunDir(ft.run)
    proc = ft.start("--init-from", str(base_ckpt), env=dict(env, VOXTRAIN_TEST_SLOW_WRITE_S="0.05"))
    try:
        wait_event(ft, proc, lambda e: e["event"] == "best_exported")
        # Rotation has dropped a checkpoint newer than the best: the disk holds the best and the newest.
        wait_event(ft, proc, lambda e: e["event"] == "checkpoint_pruned" and e["reason"] == "rotation"
                   and e["step"] > 2)
        size = run.checkpoint_files()[-1][1].stat().st_size
        hog = Hog(small_fs, leave=size // 2)
        hog.start()
        first_skip = wait_event(ft, proc, lambda e: e["event"] == "checkpoint_skipped")
        ft.wait_for_step(proc, first_skip["step"] + 3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        hog.stop.set()
        hog.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    kept = run.checkpoint_files()
    assert kept and all(not verify_checkpoint(p) for _, p in kept)
    assert run.best_export.is_file()
    skipped = {e["step"] for e in ft.metrics() if e["type"] == "event" and e["event"] == "checkpoint_skipped"}
    best_steps = [e["step"] for e in ft.metrics() if e["type"] == "event" and e["event"] == "best_exported"]
    assert best_steps == [2] and 2 not in skipped
    assert run.checkpoint(2).is_file(), kept  # the best's own checkpoint survived pruning and rotation
    newest = kept[-1][0]
    assert newest < first_skip["step"]
    # Space comes back: the same command resumes the fine-tune from its newest valid checkpoint.
    (small_fs / "filler.bin").unlink()
    r = ft.run_to_end("--set", f"training.max_steps={newest + 2}")
    assert r.returncode == 0, r.stderr
    assert f"RESUMING fine-tune from {run.checkpoint(newest)} (step {newest})" in r.stderr
    assert load_state(run.checkpoint(newest + 2))["mode"] == "finetune"
    assert _sha256(base_ckpt) == base_hash, "the base checkpoint was written to"


def _median_f0(wav_path: Path) -> float:
    import numpy as np
    import soundfile as sf

    from voxtrain.audio.features import pitch_track
    from voxtrain.config import AudioConfig

    wav, rate = sf.read(wav_path, dtype="float32")
    assert rate == AudioConfig().sample_rate
    return float(np.median(pitch_track(wav, AudioConfig())))


def _finetune_and_speak(features: Path, base: Path, work: Path) -> tuple[float, str]:
    """Fine-tune `base` on `features` for 100 steps, then the median F0 of two sentences it speaks."""
    work.mkdir()
    ft = Trainer(features, work / "run", write_config(
        work / "c.yaml", training={"max_steps": 100, "save_every": 100, "log_every": 50, "batch_size": 4,
                                   "grad_accum": 1}, finetune={"lr": 1e-3}))
    r = ft.run_to_end("--init-from", str(base))
    assert r.returncode == 0, r.stderr
    text = work / "text.txt"
    text.write_text("A short test of the voice.\nWe walked along the river.\n")
    s = subprocess.run([sys.executable, "-m", "voxtrain.cli", "synth", "-k", str(RunDir(ft.run).checkpoint(100)),
                        "--text-file", str(text), "-o", str(work / "wavs"), "--vocoder", "griffin-lim",
                        "--precision", "fp32"], env=_env(), capture_output=True, text=True, timeout=300)
    assert s.returncode == 0, s.stderr
    wavs = sorted((work / "wavs").glob("*.wav"))
    assert len(wavs) == 2
    return sum(_median_f0(p) for p in wavs) / len(wavs), r.stderr


def test_a_short_finetune_moves_the_voice_pitch_toward_the_new_speaker(trained, features, tmp_path):
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.config import config_from_dict
    from voxtrain.data import prepare_corpus
    from voxtrain.demo_corpus import make_corpus

    # The base's own sentences and voice, 40% higher: only the speaker's pitch (and formants) differ.
    make_corpus(tmp_path / "corpus", voice="espeak", n_sentences=14, seed=3, progress=False,
                speaker_shift=1.4, keep_tempo=True)
    prepare_corpus(tmp_path / "corpus", tmp_path / "features", config_from_dict(MICRO_CONFIG), workers=1,
                   progress=False)
    base_f0 = FeatureStore(features).stats["pitch_mean"]
    new_f0 = FeatureStore(tmp_path / "features").stats["pitch_mean"]
    assert new_f0 > 1.3 * base_f0
    # The control: the same fine-tune on the base's own data, so both voices had the same training.
    control, _ = _finetune_and_speak(features, trained, tmp_path / "control")
    moved, log = _finetune_and_speak(tmp_path / "features", trained, tmp_path / "new")
    assert "pitch and energy are normalized with the new data's statistics" in log
    assert abs(control - base_f0) < 0.1 * base_f0, (control, base_f0)  # the control speaks at the base's pitch
    assert abs(moved - new_f0) < 0.1 * new_f0, (moved, new_f0)  # and the fine-tune at the new speaker's
