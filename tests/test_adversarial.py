"""The acoustic model against a mel critic (GANSpeech), as real runs on the micro corpus: the
critic learns to tell real mels from the model's, and training with it resumes bitwise."""

from __future__ import annotations

import signal

import numpy as np
import torch

from conftest import assert_same, without_time
from voxtrain.artifacts.checkpoint_format import load_state
from voxtrain.artifacts.layout import RunDir

CRITIC = {"critic": "mel", "frames": 16, "channels": 8, "lr": 1e-3}


def _train_records(trainer) -> dict[int, dict]:
    return {r["step"]: r for r in trainer.metrics() if r["type"] == "train"}


def test_adversarial_training_resumes_bitwise_after_sigterm(trainer_factory) -> None:
    sections = {"training": {"max_steps": 14, "adversarial": {**CRITIC, "warmup_steps": 4, "ramp_steps": 4}}}
    straight = trainer_factory("straight", **sections)
    r = straight.run_to_end()
    assert r.returncode == 0, r.stderr
    train = _train_records(straight)
    # The critic trains from step 1; its losses reach the model after the 4 warm-up steps.
    assert "loss_critic" in train[1] and "loss_adversarial" not in train[4] and "loss_adversarial" in train[5]

    t = trainer_factory("stopped", **sections)
    proc = t.start()
    try:
        t.wait_for_step(proc, 6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    proc.stdout.close()
    stopped_at = RunDir(t.run).checkpoint_files()[-1][0]
    assert 6 <= stopped_at < 14
    r = t.run_to_end()
    assert r.returncode == 0 and "RESUMING" in r.stderr, r.stderr
    got, want = load_state(RunDir(t.run).checkpoint(14)), load_state(RunDir(straight.run).checkpoint(14))
    assert set(got["critics"]) == {"critic"} and set(got["optimizers"]) == {"model", "critic"}
    # The model, the critic, both optimizers and every RNG: bitwise those of the unbroken run.
    assert_same(without_time(want), without_time(got))


def test_a_mel_critic_learns_to_tell_real_mels_from_the_models(trainer_factory, features) -> None:
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.config import config_from_dict
    from voxtrain.data.loader import FeatureDataset, collate
    from voxtrain.model import FastSpeech2
    from voxtrain.model.critic import MelCritic, mel_windows, window_starts

    # The critic never reaches the model here: it only learns to judge.
    t = trainer_factory("judge", training={"max_steps": 30, "save_every": 30,
                                           "adversarial": {**CRITIC, "warmup_steps": 10**6}})
    r = t.run_to_end()
    assert r.returncode == 0, r.stderr
    state = load_state(RunDir(t.run).checkpoint(30))
    cfg = config_from_dict(state["config"])
    store = FeatureStore(features)
    model = FastSpeech2(cfg.model, len(store.symbols), cfg.audio.n_mels)
    model.load_state_dict(state["model"])
    critic = MelCritic(CRITIC["channels"])
    critic.load_state_dict(state["critics"]["critic"])
    model.eval(), critic.eval()
    batch = collate([FeatureDataset(store, list(range(len(store))))[i] for i in range(len(store))])
    with torch.no_grad():
        out = model(batch)
        starts = window_starts(batch.mel_lens, CRITIC["frames"], seed=7)
        judge = [torch.stack([logits.mean(1) for logits, _ in critic(mel_windows(mels, batch.mel_lens, starts,
                                                                                  CRITIC["frames"]))]).mean(0)
                 for mels in (batch.mels, out["mel_postnet"] if out["mel_postnet"] is not None else out["mel_pred"])]
    real, fake = judge
    # Least squares pulls real toward 1 and generated toward 0: 0.5 is the boundary.
    accuracy = (float((real > 0.5).float().mean()) + float((fake < 0.5).float().mean())) / 2
    assert accuracy >= 0.8, (accuracy, real, fake)


def _smoothed(mel: torch.Tensor, frames: int = 9) -> torch.Tensor:
    """A moving average over time: what a model trained on a reconstruction loss does to a mel."""
    kernel = torch.full((mel.shape[0], 1, frames), 1.0 / frames)
    padded = torch.nn.functional.pad(mel.unsqueeze(0), (frames // 2, frames // 2), mode="replicate")
    return torch.nn.functional.conv1d(padded, kernel, groups=mel.shape[0])[0]


def test_the_global_variance_post_filter_restores_real_variance_and_keeps_the_mean(features) -> None:
    """The zero-training baseline against over-smoothing: real mels, smoothed over time, come
    back with the real mels' per-bin variance and the same per-bin mean."""
    from voxtrain.artifacts.store import FeatureStore
    from voxtrain.audio.global_variance import GlobalVariancePostFilter, global_variance, per_bin_variance

    store = FeatureStore(features)
    real = [torch.from_numpy(store.item(i)["mel"].T.copy()) for i in range(len(store))]
    target = global_variance(real)
    smooth = [_smoothed(m) for m in real]
    restored = [GlobalVariancePostFilter(target)(m) for m in smooth]
    live = np.all([per_bin_variance(m) > 1e-3 for m in smooth], axis=0)  # bins that vary at all
    assert live.mean() > 0.5
    lost = global_variance(smooth)[live] / target[live]
    assert np.median(lost) < 0.8, "the smoothing must take variance away for the test to mean anything"
    for s, r in zip(smooth, restored):
        np.testing.assert_allclose(per_bin_variance(r)[live], target[live], rtol=1e-4)
        torch.testing.assert_close(r.mean(dim=1), s.mean(dim=1), atol=1e-4, rtol=0)
    # ...and so the real mels' mean, up to what the smoothing's edges moved.
    np.testing.assert_allclose(np.mean([r.mean(dim=1).numpy() for r in restored], axis=0),
                               np.mean([m.mean(dim=1).numpy() for m in real], axis=0), atol=0.05)
    untouched = GlobalVariancePostFilter(target, strength=0.0)(smooth[0])
    torch.testing.assert_close(untouched, smooth[0])


def test_a_fine_tune_starts_its_critic_from_the_base_runs_critic(trainer_factory) -> None:
    sections = {"training": {"max_steps": 4, "save_every": 4, "validate_every": 4,
                             "adversarial": {**CRITIC, "warmup_steps": 2}}}
    base = trainer_factory("base", **sections)
    assert (r := base.run_to_end()).returncode == 0, r.stderr
    given = RunDir(base.run).checkpoint(4)
    # A critic LR far below float32's resolution leaves the started critic exactly as it was given.
    tuned = trainer_factory("tuned", training={"max_steps": 1, "save_every": 1,
                                               "adversarial": {**CRITIC, "lr": 1e-30}})
    r = tuned.run_to_end("--init-from", str(given))
    assert r.returncode == 0, r.stderr
    assert f"mel critic started from the base's, in {given}" in r.stderr
    assert_same(load_state(given)["critics"], load_state(RunDir(tuned.run).checkpoint(1))["critics"])
    # An export holds no critic: the fine-tune says so and starts a fresh one.
    fresh = trainer_factory("fresh", training={"max_steps": 1, "save_every": 1, "adversarial": CRITIC})
    r = fresh.run_to_end("--init-from", str(RunDir(base.run).best_export))
    assert r.returncode == 0 and "the mel critic starts fresh" in r.stderr and "is an export" in r.stderr, r.stderr
