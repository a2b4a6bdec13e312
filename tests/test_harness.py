"""The run harness with a task of its own: a toy generator and critic, two optimizers in one
step, each with its own schedule and clip. A stop at a stage target and a resume end bitwise
where the unbroken run ends. And the checkpoint table in docs/CHECKPOINTS.md is the schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import torch

from conftest import assert_same
from voxtrain.artifacts.checkpoint_format import FACT_KEYS, KEYS, TrainingState, load_state
from voxtrain.artifacts.layout import RunDir
from voxtrain.config import Config
from voxtrain.train.engine import run_task
from voxtrain.train.step import train_step
from voxtrain.train.stopping import StopRules
from voxtrain.train.task import LoopSettings, OptimizerSlot, RunContext, StepResult, Validation

ROOT = Path(__file__).resolve().parents[1]


class Noise:
    """A batch of 4 vectors: the 'real' data the critic tells from the generator's."""

    def __init__(self, real: torch.Tensor) -> None:
        self.real = real

    def __len__(self) -> int:
        return len(self.real)

    def to(self, device, non_blocking: bool = False) -> Noise:
        return Noise(self.real.to(device))

    def split(self, parts: int) -> list[Noise]:
        return [Noise(r) for r in self.real.chunk(parts)]

    def frame_counts(self) -> tuple[int, int]:
        return len(self.real), len(self.real)


def critic_loss(generator, critic):
    def objective(model, batch: Noise, step: int):
        # torch.randn draws from the global RNG: a resume must restore it to draw the same noise.
        fake = generator(torch.randn(len(batch), 3)).detach()
        loss = (model(batch.real) - 1).pow(2).mean() + model(fake).pow(2).mean()
        return loss, {"total": loss, "critic": loss}
    return objective


def generator_loss(critic):
    def objective(model, batch: Noise, step: int):
        fake = model(torch.randn(len(batch), 3))
        adversarial = (critic(fake) - 1).pow(2).mean()
        total = adversarial + 0.1 * (fake - batch.real).abs().mean()
        return total, {"total": total, "adversarial": adversarial}
    return objective


class ToyTask:
    mode = "toy"
    description = "STARTING a toy generator and critic"
    symbols: dict = {}
    dataset_fingerprint = None
    run_facts: dict = {}

    def __init__(self, ctx: RunContext, config: Config) -> None:
        self.ctx, self.config = ctx, config
        self.loop = LoopSettings("toy", max_steps=12, log_every=2, validate_every=4, save_every=5,
                                 max_nonfinite_steps=3)
        self.stop_rules = StopRules({}, 1)
        torch.manual_seed(0)
        generator, critic = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
        g_opt = torch.optim.Adam(generator.parameters(), lr=1e-2)
        c_opt = torch.optim.AdamW(critic.parameters(), lr=1e-2)
        acc = ctx.accelerator
        self.g, g_opt, self.c, c_opt = acc.prepare(generator, g_opt, critic, c_opt)
        self.model, self.critics = acc.unwrap_model(self.g), {"critic": acc.unwrap_model(self.c)}
        # Two schedules (one decays, one is constant) and two clips: each slot keeps its own.
        self.slots = {"model": OptimizerSlot(g_opt, lambda n: 1e-2 / n, 0.5),
                      "critic": OptimizerSlot(c_opt, lambda n: 2e-3, 0.0)}

    def attach(self, recorder) -> None:
        self.recorder = recorder

    def batches(self, epoch: int, batch_in_epoch: int) -> Iterator[tuple[int, int, Noise]]:
        while True:
            if batch_in_epoch >= 3:
                epoch, batch_in_epoch = epoch + 1, 0
            real = torch.randn(4, 3, generator=torch.Generator().manual_seed(epoch * 10 + batch_in_epoch)) + 2
            batch_in_epoch += 1
            yield epoch, batch_in_epoch, Noise(real)

    def step(self, micro_batches, step: int) -> StepResult:
        acc = self.ctx.accelerator
        critic = train_step(self.c, critic_loss(self.model, self.c), self.slots["critic"], acc, micro_batches, step)
        result = train_step(self.g, generator_loss(self.critics["critic"]), self.slots["model"], acc, micro_batches,
                            step)
        result.losses |= {"critic": critic.losses["critic"]}
        result.applied = result.applied and critic.applied
        return result

    def validate(self, step: int) -> Validation:
        with torch.no_grad():
            fake = self.model(torch.ones(8, 3))
        val = float((fake - 2).abs().mean())
        self.recorder.val(step, {"mel": val})
        return Validation(val, None, {"val_mel": val})

    def export_best(self, ckpt, validation: Validation) -> None:
        ckpt.export_best(self.model.state_dict(), {"step": ckpt.best.step})

    def facts(self) -> dict:
        return {}

    def announce(self) -> dict:
        return {}

    def advice(self, trouble: str) -> str:
        return "toy"


class ToyOpener:
    def __init__(self) -> None:
        self.config = Config.model_validate({"training": {"trackers": []}, "checkpoint": {"keep_last": 5}})
        self.precision = "fp32"

    def open(self, ctx: RunContext) -> ToyTask:
        return ToyTask(ctx, self.config)


def test_a_generator_and_critic_resume_bitwise(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    assert run_task(ToyOpener(), straight).exit_code == 0
    staged = tmp_path / "staged"
    first = run_task(ToyOpener(), staged, until_step=7)  # mid-epoch, between two saves
    assert (first.exit_code, first.step) == (0, 7)
    second = run_task(ToyOpener(), staged)
    assert (second.exit_code, second.step) == (0, 12)

    want = load_state(RunDir(straight).checkpoint(12))
    got = load_state(RunDir(staged).checkpoint(12))
    assert set(got["optimizers"]) == {"model", "critic"} and set(got["critics"]) == {"critic"}
    # Each slot took its own LR: the generator's decays with the step, the critic's is constant.
    assert got["optimizers"]["model"]["param_groups"][0]["lr"] == 1e-2 / 12
    assert got["optimizers"]["critic"]["param_groups"][0]["lr"] == 2e-3
    assert all(int(s["step"]) == 12 for slot in got["optimizers"].values() for s in slot["state"].values())
    assert_same({k: v for k, v in want.items() if k != "time"}, {k: v for k, v in got.items() if k != "time"})
    state = TrainingState.from_dict(got)
    assert state.format == 2 and state.mode == "toy" and state.best["step"] in (4, 8, 12)


def test_a_format_1_checkpoint_still_reads() -> None:
    old = {"format": 1, "mode": "train", "model": {"w": torch.zeros(2)}, "optimizer": {"state": {}},
           "scaler": None, "step": 5, "epoch": 0, "batch_in_epoch": 5, "rng": {}, "config": {}, "symbols": {},
           "best_step": 4, "best_loss": 0.5, "symbol_clips": {"a": 1}}
    state = TrainingState.from_dict(old)
    assert state.optimizers == {"model": {"state": {}}}
    assert state.best == {"metric": "val_mel", "step": 4, "value": 0.5, "val_mel": 0.5}
    assert state.facts == {"symbol_clips": {"a": 1}} and state.to_dict()["symbol_clips"] == {"a": 1}


def test_the_checkpoint_table_in_the_docs_is_the_schema() -> None:
    text = (ROOT / "docs" / "CHECKPOINTS.md").read_text(encoding="utf-8")
    tables = re.findall(r"((?:^\|.*\|\n)+)", text, flags=re.M)
    keys = [re.findall(r"^\| `([a-z_]+)` \|", t, flags=re.M) for t in tables]
    assert list(KEYS) in keys, "docs/CHECKPOINTS.md lacks a table of exactly checkpoint_format.KEYS, in order"
    assert list(FACT_KEYS) in keys, "docs/CHECKPOINTS.md lacks a table of exactly checkpoint_format.FACT_KEYS"
