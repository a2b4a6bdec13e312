"""`voxtrain finetune` as real processes on the micro corpus: the voice it writes, its budget,
its resume after SIGKILL in each stage, and the input it refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from conftest import _env, assert_same, run_cmd, wait_until

# Step targets the user's --set gives win over the pipeline's plan: a few steps of each stage.
FEW_STEPS = ("training.max_steps=6", "training.save_every=2", "vocoder_training.max_steps=4",
             "vocoder_training.save_every=2", "finetune.min_budget_minutes=0.1")


def finetune_cmd(base: Path, features: Path, corpus: Path, run: Path, config: Path, *settings: str,
                 budget: str = "10m", onnx: bool = False) -> list[str]:
    return [sys.executable, "-m", "voxtrain.cli", "finetune", "--base", str(base), "--corpus", str(corpus),
            "--features", str(features), "--run", str(run), "--config", str(config), "--budget", budget, "--yes",
            *(["--onnx"] if onnx else []), *(x for s in settings for x in ("--set", s))]


def stages(run: Path) -> dict:
    return json.loads((run / "pipeline.json").read_text())["stages"]


def kill_when(cmd: list[str], ready, what: str) -> None:
    """Start the pipeline in its own process group and SIGKILL all of it (stage included) once `ready()`."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(ready, 300, what, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_in_each_stage_it_resumes_to_the_unbroken_runs_voice(acoustic, features, corpus_dir,
                                                                     vocoder_config, tmp_path) -> None:
    from voxtrain.artifacts.weights import load_weights

    # The unbroken pipeline runs detached, as `--detach` does: it returns once the pipeline holds its folder.
    reference = tmp_path / "reference"
    launched = run_cmd([*finetune_cmd(acoustic, features, corpus_dir, reference, vocoder_config, *FEW_STEPS),
                        "--detach"])
    assert launched.returncode == 0 and "voxtrain status" in launched.stdout, launched.stderr
    # It holds its folder: a second pipeline on it is refused, naming the first.
    second = run_cmd(finetune_cmd(acoustic, features, corpus_dir, reference, vocoder_config, *FEW_STEPS))
    assert second.returncode == 1 and "is already being trained by pid" in second.stderr, second.stderr
    wait_until(lambda: stages(reference).get("voice", {}).get("status") == "done"
               if (reference / "pipeline.json").is_file() else False, 600, "the detached pipeline's voice")
    assert {k: v["status"] for k, v in stages(reference).items()} == {
        "acoustic": "done", "vocoder": "done", "voice": "done"}

    run = tmp_path / "interrupted"
    cmd = finetune_cmd(acoustic, features, corpus_dir, run, vocoder_config, *FEW_STEPS)
    kill_when(cmd, lambda: (run / "acoustic" / "checkpoints" / "ckpt-step00000002.pt").is_file(), "acoustic step 2")
    # status reads the pipeline folder: where the pipeline is, and its stage's run.
    shown = run_cmd([sys.executable, "-m", "voxtrain.cli", "status", str(run)])
    assert "fine-tune pipeline: stage acoustic (2 of 4, running)" in shown.stderr, shown.stderr
    assert str(run / "acoustic") in shown.stdout + shown.stderr
    kill_when(cmd, lambda: (run / "vocoder" / "checkpoints" / "ckpt-step00000002.pt").is_file(), "vocoder step 2")
    assert stages(run)["acoustic"]["status"] == "done" and stages(run)["vocoder"]["status"] == "running"
    finished = run_cmd(cmd, timeout=600)
    assert finished.returncode == 0, finished.stderr
    # The finished stage is not run again; the vocoder stage resumes from its checkpoint.
    assert "acoustic stage: done already" in finished.stderr and "acoustic stage: running" not in finished.stderr
    assert "RESUMING the vocoder fine-tune" in finished.stderr

    # The same voice as the unbroken pipeline's: acoustic weights and generator.
    assert_same(load_weights(reference / "voice.safetensors")[0], load_weights(run / "voice.safetensors")[0])
    assert_same(torch.load(reference / "voice.generator.pt", weights_only=True),
                torch.load(run / "voice.generator.pt", weights_only=True))
    sidecar = json.loads((run / "voice.json").read_text())
    assert sidecar["vocoder"] == "voice.generator.pt"

    wav = tmp_path / "hello.wav"
    spoken = run_cmd([sys.executable, "-m", "voxtrain.cli", "synth", "--checkpoint", str(run / "voice.safetensors"),
                      "--text", "Hello there.", "--out", str(wav)])
    assert spoken.returncode == 0, spoken.stderr
    assert wav.stat().st_size > 1000


def test_the_budget_is_kept_and_a_stage_cut_short_still_leaves_a_voice(acoustic, features, corpus_dir,
                                                                        vocoder_config, tmp_path) -> None:
    run = tmp_path / "budget"
    # Steps the budget cannot reach; a tenth of two minutes for the acoustic stage leaves the
    # vocoder stage less than it needs, so the voice keeps the base's vocoder.
    result = run_cmd(finetune_cmd(acoustic, features, corpus_dir, run, vocoder_config, "training.max_steps=100000",
                                  "finetune.min_budget_minutes=0.1", "finetune.acoustic_share=0.1",
                                  "finetune.reserve_seconds=0", budget="2m", onnx=True), timeout=600)
    assert result.returncode == 0, result.stderr
    record = stages(run)
    assert record["acoustic"]["cause"] == "time_budget" and record["acoustic"]["step"] < 100000
    assert record["vocoder"]["status"] == "skipped"
    # Measured by the pipeline's own records, not by this test's clock.
    assert sum(r["seconds"] for r in record.values()) <= 120, record
    sidecar = json.loads((run / "voice.json").read_text())
    assert "vocoder" not in sidecar and sidecar["step"] == record["acoustic"]["step"]

    # --onnx: the piper voice beside it, which piper's own CLI plays.
    from voxtrain.demo_corpus import find_piper_executable

    assert record["voice"]["onnx"] == str(run / "voice.onnx")
    wav = tmp_path / "piper.wav"
    played = subprocess.run([str(find_piper_executable()), "-m", str(run / "voice.onnx"), "-f", str(wav)],
                            input="Hello there.\n", capture_output=True, text=True, timeout=300)
    assert played.returncode == 0, played.stderr
    assert wav.stat().st_size > 1000


def test_bad_input_is_refused_by_name_and_loses_nothing(acoustic, features, corpus_dir, vocoder_config,
                                                         tmp_path) -> None:
    run = tmp_path / "refused"
    small = run_cmd(finetune_cmd(acoustic, features, corpus_dir, run, vocoder_config, budget="1m"))
    assert small.returncode == 1 and "Traceback" not in small.stderr, small.stderr
    assert "--budget 1m is too small" in small.stderr and "the minimum is 4 minutes" in small.stderr
    assert not run.exists()  # refused before any work

    short = run_cmd(finetune_cmd(acoustic, features, corpus_dir, run, vocoder_config,
                                 "finetune.min_audio_seconds=100000"))
    assert short.returncode == 1 and "Traceback" not in short.stderr, short.stderr
    assert "s of training audio" in short.stderr and "needs at least 100000 s" in short.stderr

    (run / "pipeline.json").parent.mkdir(parents=True, exist_ok=True)
    (run / "pipeline.json").write_text(json.dumps({"request": {"base": "other.safetensors", "corpus": str(corpus_dir),
                                                               "features": str(features)}, "stages": {}}))
    other = run_cmd(finetune_cmd(acoustic, features, corpus_dir, run, vocoder_config))
    assert other.returncode == 1 and "was started with --base other.safetensors" in other.stderr, other.stderr
