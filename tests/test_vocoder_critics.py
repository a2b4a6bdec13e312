"""`voxtrain train-vocoder`'s critics, its choice by ear and its joint mode, as real processes
on the micro corpus (a file apart from test_vocoder_harness so the two run in parallel)."""

from __future__ import annotations

import json
import signal
import subprocess

import torch
import yaml

from conftest import OutputLines, _env, assert_same, events, records, run_cmd, vocoder_cmd, wait_until, without_time

ADVERSARIAL = ("--set", "vocoder_training.critic=spectral", "--set", "vocoder_training.critic_warmup_steps=2",
               "--set", "vocoder_training.adversarial_ramp_steps=2")


def test_adversarial_training_resumes_bitwise_after_sigterm(acoustic, features, corpus_dir, vocoder_config,
                                                            tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir

    reference = RunDir(tmp_path / "reference")
    straight = run_cmd(vocoder_cmd(acoustic, features, corpus_dir, reference.root, vocoder_config, *ADVERSARIAL))
    assert straight.returncode == 0, straight.stderr
    # After the warm-up (steps 1-2) the generator also learns from the critic.
    train = records(reference.root, "train")
    assert "loss_critic" in train[1] and "loss_adversarial" not in train[2] and "loss_adversarial" in train[3]

    run = RunDir(tmp_path / "interrupted")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *ADVERSARIAL)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    output = OutputLines(proc.stdout)
    try:
        wait_until(lambda: max(records(run.root, "train"), default=0) >= 3, 240, "step 3", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, output.text
    finally:
        if proc.poll() is None:
            proc.kill()
    output.join(timeout=10)
    stopped_at = run.checkpoint_files()[-1][0]
    assert 3 <= stopped_at < 6
    resumed = run_cmd(cmd)
    assert resumed.returncode == 0, resumed.stderr
    got = torch.load(run.checkpoint(6), weights_only=True)
    want = torch.load(reference.checkpoint(6), weights_only=True)
    assert set(got["critics"]) == {"critic"} and set(got["optimizers"]) == {"model", "critic"}
    # Generator, critic, both optimizers and every RNG: bitwise those of the unbroken run.
    assert_same(without_time(want), without_time(got))


def test_a_critic_can_start_from_another_runs_critic(acoustic, features, corpus_dir, vocoder_config,
                                                     tmp_path) -> None:
    from voxtrain.artifacts.layout import RunDir

    seed = RunDir(tmp_path / "seed")
    first = run_cmd([*vocoder_cmd(acoustic, features, corpus_dir, seed.root, vocoder_config, *ADVERSARIAL),
                     "--until-step", "2"])
    assert first.returncode == 0, first.stderr
    given = seed.checkpoint(2)
    # A critic LR far below float32's resolution leaves the started critic exactly as it was given.
    run = RunDir(tmp_path / "seeded")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *ADVERSARIAL, "--set",
                      f"vocoder_training.critic_from={given}", "--set", "vocoder_training.critic_lr=1e-30",
                      "--until-step", "1")
    seeded = run_cmd(cmd)
    assert seeded.returncode == 0, seeded.stderr
    assert f"critic started from {given} (step 2)" in seeded.stderr
    assert_same(torch.load(given, weights_only=True)["critics"],
                torch.load(run.checkpoint(1), weights_only=True)["critics"])

    refused = run_cmd([*vocoder_cmd(acoustic, features, corpus_dir, tmp_path / "refused", vocoder_config,
                                    *ADVERSARIAL), "--set", f"vocoder_training.critic_from={acoustic}"])
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"vocoder_training.critic_from: {acoustic} holds no critic" in refused.stderr


def test_the_vocoder_is_chosen_by_ear_its_start_and_its_best(acoustic, features, corpus_dir, vocoder_config,
                                                              tmp_path) -> None:
    """The starting generator is the bundled one whose copy-synthesis of the speaker's clips the
    ear prefers. With checkpoint.best_by a listening score, the voice (the acoustic model with the
    generator in training) is scored at every validation, and the best generator is the one the
    ear prefers, whatever its mel error: a critic moves the two apart."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.weights import load_weights

    run = RunDir(tmp_path / "auto")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *sets(
        "vocoder_training.start=auto", "vocoder_training.start_clips=2", "evaluation.enabled=true",
        "evaluation.sentences=2", "evaluation.scorers=[dnsmos]", "checkpoint.best_by=dnsmos_ovrl",
        "vocoder_training.validate_every=3"))
    result = run_cmd(cmd)
    assert result.returncode == 0, result.stderr
    info = json.loads(run.run_info.read_text())["start_generator"]
    start = {name: s["dnsmos_ovrl"] for name, s in info["scores"].items()}
    assert set(start) == {"ljspeech", "universal"} and info["name"] == max(start, key=start.get), info
    assert "starting vocoder" in result.stderr  # the pre-flight row says which, and why
    # The run uses what pre-flight chose (config.yaml records it) and its checkpoint says so.
    assert yaml.safe_load(run.config.read_text())["vocoder_training"]["start"] == info["name"]
    assert torch.load(run.checkpoint(6), weights_only=True)["start_generator"] == info["name"]

    heard = {step: r["dnsmos_ovrl"] for step, r in records(run.root, "eval").items()}
    assert sorted(heard) == [0, 3, 6], heard
    best = events(run.root, "best_exported")
    top = max(heard, key=heard.get)
    assert best[-1]["best_by"] == "dnsmos_ovrl" and best[-1]["step"] == top, (best, heard)
    assert best[-1]["value"] == heard[top], best  # ranked by the ear's score, not by val_mel
    assert load_weights(run.best_export)[1]["vocoder_step"] == best[-1]["step"]


def sets(*values: str) -> list[str]:
    return [x for v in values for x in ("--set", v)]


def test_joint_fine_tuning_trains_both_models_resumes_bitwise_and_ships_both(acoustic, features, corpus_dir,
                                                                               vocoder_config, tmp_path) -> None:
    """vocoder_training.joint: the acoustic model learns through the generator. The checkpoint
    holds both models and resumes bitwise; the best voice is the jointly trained acoustic model
    beside its generator; a resume that changes the setting is refused by name."""
    from voxtrain.artifacts.layout import RunDir
    from voxtrain.artifacts.weights import load_weights
    joint = sets("vocoder_training.joint=true", "vocoder_training.max_steps=4")
    reference = RunDir(tmp_path / "reference")
    straight = run_cmd(vocoder_cmd(acoustic, features, corpus_dir, reference.root, vocoder_config, *joint))
    assert straight.returncode == 0, straight.stderr
    final = torch.load(reference.checkpoint(4), weights_only=True)
    base = load_weights(acoustic)[0]
    trained = {k.removeprefix("acoustic."): v for k, v in final["model"].items() if k.startswith("acoustic.")}
    assert set(trained) == set(base) and any(k.startswith("generator.") for k in final["model"])
    assert not all(torch.equal(trained[k], base[k]) for k in base)  # the acoustic model learned
    assert "loss_acoustic" in records(reference.root, "train")[1]

    run = RunDir(tmp_path / "interrupted")
    cmd = vocoder_cmd(acoustic, features, corpus_dir, run.root, vocoder_config, *joint)
    assert run_cmd([*cmd, "--until-step", "2"]).returncode == 0
    changed = run_cmd([*cmd, "--set", "vocoder_training.joint=false"])
    assert changed.returncode == 1 and "Traceback" not in changed.stderr, changed.stderr
    assert "vocoder_training.joint" in changed.stderr and "resume with the run's own setting" in changed.stderr
    resumed = run_cmd(cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(without_time(final), without_time(torch.load(run.checkpoint(4), weights_only=True)))

    # The best voice: acoustic weights and generator from the same step, as synth loads them.
    step = events(reference.root, "best_exported")[-1]["step"]
    source = base if step == 0 else trained
    weights, meta = load_weights(reference.best_export)
    assert meta["vocoder_step"] == step and meta["acoustic_joint_step"] == step
    assert_same(source, weights)
    if step:
        exported = torch.load(reference.vocoder_export, weights_only=True)["generator"]
        assert_same({k.removeprefix("generator."): v for k, v in final["model"].items()
                     if k.startswith("generator.")}, exported)
