"""The CUDA path: run on a machine with a GPU (they are skipped elsewhere; `pytest -m cuda` selects them)."""

from __future__ import annotations

import pytest
import torch

from voxtrain.artifacts.checkpoints import load_state
from voxtrain.artifacts.layout import RunDir

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_training_on_the_gpu_logs_device_memory_and_saves_cpu_loadable_state(trainer_factory):
    t = trainer_factory("gpu", training={"max_steps": 6, "save_every": 6, "precision": "auto"},
                        data={"num_workers": 1})
    r = t.run_to_end(env={**t_env(), "CUDA_VISIBLE_DEVICES": "0"})
    assert r.returncode == 0, r.stderr
    assert "device cuda" in r.stderr
    records = [rec for rec in t.metrics() if rec["type"] == "train"]
    assert records and all(rec["cuda_peak_allocated"] > 0 for rec in records)
    assert all(rec["cuda_reserved"] >= rec["cuda_allocated"] for rec in records)
    state = load_state(RunDir(t.run).checkpoint(6))  # map_location cpu: loads on a machine without a GPU
    assert all(v.device.type == "cpu" for v in state["model"].values())


def test_resume_on_the_gpu_continues_the_schedule(trainer_factory):
    t = trainer_factory("gpu_resume", training={"max_steps": 8, "save_every": 4, "precision": "bf16"})
    assert t.run_to_end("--until-step", "4", env=t_env()).returncode == 0
    r = t.run_to_end(env=t_env())
    assert r.returncode == 0 and "RESUMING" in r.stderr, r.stderr
    lrs = {rec["step"]: rec["lr"] for rec in t.metrics() if rec["type"] == "train"}
    assert sorted(lrs) == list(range(1, 9))


def test_synthesis_on_the_gpu_matches_the_cpu(trainer_factory, tmp_path):
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.torch_voice import Synthesizer

    t = trainer_factory("gpu_synth", training={"max_steps": 4, "save_every": 4})
    assert t.run_to_end(env=t_env()).returncode == 0
    ckpt = RunDir(t.run).checkpoint(4)
    mels = {}
    for device in ("cpu", "cuda"):
        synth = Synthesizer(load_acoustic_model(ckpt, device), "griffin-lim", device=device, precision="fp32")
        mels[device] = synth.mels(["A short test."])[0].cpu()
    assert mels["cpu"].shape == mels["cuda"].shape
    assert torch.allclose(mels["cpu"], mels["cuda"], atol=1e-2)


def t_env() -> dict:
    from conftest import _env

    return _env()
