"""Training throughput of the real model + loss + optimizer step on synthetic LJSpeech-like batches.

    python bench/train_throughput.py                          # configs/ljspeech.yaml, bf16, batch 16
    python bench/train_throughput.py --precision fp32 --bucketed --iters 3

Prints one JSON object. The step is the engine's own `voxtrain.train.step.train_step` on an
Accelerator: FastSpeech2 forward (aligner + MAS included) and FastSpeech2Loss under
Accelerate's autocast, backward, gradient clipping, the finiteness check, Adam step. On a
machine with CUDA it runs on the GPU. Lengths are drawn like LJSpeech (mean ~555 mel
frames, ~5 frames per phoneme, 100-870 frames); a batch is 16 random clips padded to the
longest, or with --bucketed 16 neighbours in length order, as the sampler's buckets give.

useful_mfu = flops_per_step x real/padded frames / s_per_step / peak_gflops_bf16: the share
of the machine's measured bf16 GEMM peak spent on real (non-padding) frames.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from voxtrain.config import load_config
from voxtrain.malloc import retain_freed_memory
from voxtrain.model import Batch, FastSpeech2, FastSpeech2Loss
from voxtrain.text.symbols import SymbolTable
from voxtrain.train.acoustic import AcousticObjective
from voxtrain.train.optim import make_optimizer
from voxtrain.train.step import train_step
from voxtrain.train.task import OptimizerSlot

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_PHONEME = 5.05  # LJSpeech: ~555 frames for ~110 phonemes


def ljspeech_lengths(n: int, gen: torch.Generator) -> list[int]:
    """Mel lengths like LJSpeech's 1-10 s clips: mean ~555 frames (6.4 s), clipped to 100-870."""
    lens = torch.normal(565.0, 190.0, (n,), generator=gen).clamp(100, 870)
    return [int(x) for x in lens.round()]


def pick_lengths(batch: int, bucketed: bool, gen: torch.Generator) -> list[int]:
    if not bucketed:
        return ljspeech_lengths(batch, gen)
    # The sampler sorts pools of 50 batches: take the sorted batch whose mean is most typical.
    pool = sorted(ljspeech_lengths(batch * 50, gen))
    batches = [pool[i : i + batch] for i in range(0, len(pool), batch)]
    return min(batches, key=lambda b: abs(statistics.mean(b) - 555))


def synthetic_batch(mel_lens: list[int], n_symbols: int, n_mels: int, gen: torch.Generator) -> Batch:
    """A padded batch shaped like collate()'s, with noise standing in for features."""
    b, t_max = len(mel_lens), max(mel_lens)
    ph_lens = [max(2, round(t / FRAMES_PER_PHONEME)) for t in mel_lens]
    n_max = max(ph_lens)
    phonemes = torch.zeros(b, n_max, dtype=torch.long)
    mels = torch.zeros(b, t_max, n_mels)
    pitch, energy = torch.zeros(b, t_max), torch.zeros(b, t_max)
    for i, (n, t) in enumerate(zip(ph_lens, mel_lens, strict=True)):
        phonemes[i, :n] = torch.randint(2, n_symbols, (n,), generator=gen)
        mels[i, :t] = torch.randn(t, n_mels, generator=gen) * 2.0 - 5.0  # log-mel range
        pitch[i, :t] = torch.randn(t, generator=gen)
        energy[i, :t] = torch.randn(t, generator=gen)
    return Batch(phonemes, torch.tensor(ph_lens), mels, torch.tensor(mel_lens), pitch, energy)


def _cpu_sdpa_formulas() -> dict:
    """FlopCounterMode has no formula for the CPU flash-attention kernel that SDPA uses
    here; without these the attention matmuls (~8% of the step) would be missed."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    out = {}
    if fwd is not None:
        out[fwd] = lambda q, k, v, *a, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v)
    if bwd is not None:
        out[bwd] = lambda g, q, k, v, *a, out_shape=None, **kw: fc.sdpa_backward_flop_count(g, q, k, v)
    return out


def gemm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matmul at the current thread count: the best of reps calls, so
    a call slowed by other load on the machine does not lower the peak (and raise the MFU)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


class Step:
    """One optimizer step: the engine's own `train_step`, on an Accelerator like the engine's."""

    def __init__(self, cfg, precision: str):
        from accelerate import Accelerator

        self.cfg = cfg
        self.accelerator = Accelerator(mixed_precision={"bf16": "bf16", "fp32": "no"}[precision])
        self.n_symbols = len(SymbolTable.default())
        model = FastSpeech2(cfg.model, self.n_symbols, cfg.audio.n_mels).train()
        self.loss_fn = FastSpeech2Loss(cfg.training, cfg.model.aligner)
        optimizer = make_optimizer(model.parameters(), cfg.training, self.accelerator.device)
        self.model, opt = self.accelerator.prepare(model, optimizer)
        self.slot = OptimizerSlot(opt, lambda n: cfg.training.lr, cfg.training.grad_clip)
        self.objective = AcousticObjective(self.loss_fn)
        self.step_no = 10**6  # past the binarization ramp: every loss term is on

    def __call__(self, batch: Batch) -> float:
        """Seconds of one step, including the host sync that ends it (as in the engine)."""
        t0 = time.perf_counter()
        train_step(self.model, self.objective, self.slot, self.accelerator, [batch], self.step_no)
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ljspeech.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--bucketed", action="store_true", help="a low-padding batch of neighbouring lengths")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (the first also counts FLOPs)")
    parser.add_argument("--iters", type=int, default=3, help="measured steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc malloc as it is (the trainer tunes it: voxtrain.malloc)")
    args = parser.parse_args()
    malloc_tuned = False if args.system_malloc else retain_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = load_config(args.config, args.overrides)
    gen = torch.Generator().manual_seed(args.seed)
    step = Step(cfg, args.precision)
    batch = synthetic_batch(pick_lengths(args.batch, args.bucketed, gen), step.n_symbols, cfg.audio.n_mels, gen)
    real, padded = batch.frame_counts()

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_formulas())
    with counter:
        step(batch)  # the first warm-up step, counted
    flops = counter.get_total_flops()
    for _ in range(args.warmup - 1):
        step(batch)
    runs, ru0 = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.iters):
        runs.append(step(batch))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    user_per_step = (ru1.ru_utime - ru0.ru_utime) / args.iters
    sys_per_step = (ru1.ru_stime - ru0.ru_stime) / args.iters
    s_per_step = statistics.median(runs)
    peak_bf16, peak_fp32 = gemm_peak(torch.bfloat16), gemm_peak(torch.float32)
    useful = flops * real / padded / s_per_step / 1e9
    result = {
        "config": os.path.relpath(args.config, ROOT) if args.config.startswith(str(ROOT)) else args.config,
        "parameters": sum(p.numel() for p in step.model.parameters()),
        "precision": args.precision,
        "device": str(step.accelerator.device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "bucketed": args.bucketed,
        "real_frames": real,
        "padded_frames": padded,
        "padding_fraction": round(1 - real / padded, 3),
        "phonemes_mean": round(float(batch.phoneme_lens.float().mean()), 1),
        "warmup": args.warmup,
        "iters": args.iters,
        "s_per_step": round(s_per_step, 3),
        "s_per_step_all": [round(r, 3) for r in runs],
        # Process CPU time is what other load on a shared machine inflates least.
        "cpu_s_per_step": round(user_per_step + sys_per_step, 3),
        "cpu_sys_s_per_step": round(sys_per_step, 3),  # kernel time: page faults of fresh allocations
        "minor_page_faults_per_step": round((ru1.ru_minflt - ru0.ru_minflt) / args.iters),
        "real_frames_per_s": round(real / s_per_step, 1),
        "flops_per_step": flops,
        "gflop_per_step": round(flops / 1e9, 1),
        "peak_gflops_bf16": round(peak_bf16, 1),
        "peak_gflops_fp32": round(peak_fp32, 1),
        "achieved_gflops": round(flops / s_per_step / 1e9, 1),
        "useful_mfu": round(useful / peak_bf16, 4),
        "useful_mfu_vs_own_precision_peak": round(useful / (peak_bf16 if args.precision == "bf16" else peak_fp32), 4),
        "max_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "malloc_tuned": malloc_tuned,
        "torch": torch.__version__,
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
