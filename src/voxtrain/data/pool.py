"""The process pool of `voxtrain prepare`: start method, chunking, progress, shard writes.

Workers compute features of small chunks of clips; this (parent) side gathers them per
shard and writes each shard as soon as all its clips are in, so the stored result does
not depend on the number of workers or on which finished first.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtrain.artifacts.layout import StoreLayout
from voxtrain.artifacts.store import write_shard
from voxtrain.config import Config
from voxtrain.data.metadata import Entry
from voxtrain.data.worker import ChunkTask, assemble_shard, init_worker, process_chunk
from voxtrain.text import SymbolTable

# Most clips one pool task computes (see chunk_size).
MAX_CHUNK_CLIPS = 16


def _mp_context() -> mp.context.BaseContext:
    # fork starts workers instantly (torch, numpy and espeak are already imported), which
    # matters when a whole prepare takes seconds. It is unsafe when another Python thread
    # might hold a lock (logging, stdio, imports) at the moment of the fork, so we fork only
    # when no other Python thread exists (the CLI case: the pool is created before the
    # progress bar starts its refresh thread). Native pools are no obstacle: OpenBLAS
    # (whose idle threads exist as soon as numpy is imported) re-initialises itself in the
    # child, and children set torch to one thread so they never enter the parent's OpenMP
    # pool, the recipe of torch's own DataLoader workers.
    # Otherwise forkserver (POSIX) or spawn: a second or two slower to start, safe anywhere.
    methods = mp.get_all_start_methods()
    if sys.platform.startswith("linux") and threading.active_count() == 1 and "fork" in methods:
        with contextlib.suppress(ImportError):  # warm-up only: each child builds its own espeak backend
            import phonemizer.backend  # noqa: F401
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        # Imported once in the server, so each worker forked from it starts warm.
        ctx.set_forkserver_preload(["voxtrain.audio", "voxtrain.text", "voxtrain.data.worker"])
        return ctx
    return mp.get_context("spawn")


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar, not started: its refresh thread must not exist at fork time."""
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]prepare"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("clips"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _terminate(executor: ProcessPoolExecutor) -> None:
    # shutdown() alone would let every worker finish its task first; an interrupted
    # prepare should stop now (its unfinished shards are redone on the next run).
    for proc in list(getattr(executor, "_processes", {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class ShardJob:
    index: int
    signature: str
    entries: tuple[Entry, ...]
    pending: int = 0
    results: dict[int, dict[str, Any]] = field(default_factory=dict)


def chunk_size(n_candidates: int, workers: int) -> int:
    # Small enough that the last chunks spread over all workers, large enough that the
    # per-task overhead (pickling, one espeak call) stays negligible.
    return max(1, min(MAX_CHUNK_CLIPS, -(-n_candidates // (workers * 4))))


def run_jobs(
    jobs: list[ShardJob],
    layout: StoreLayout,
    wavs_dir: Path,
    config: Config,
    symbols: SymbolTable,
    workers: int,
    bar: Any,
    done: int,
) -> None:
    """Compute every clip of `jobs` in a process pool; write each shard once all its clips are in.
    `done` clips (of reused shards) count as finished on the progress bar from the start."""
    n_mels = config.audio.n_mels
    tasks = _chunk_tasks(jobs, wavs_dir, workers)
    total = done + sum(len(j.entries) for j in jobs)
    # Entries rejected while parsing need no worker: they count as done from the start.
    done = total - sum(len(t.entries) for t in tasks)
    for job in jobs:
        if job.pending == 0:
            _write_job_shard(job, layout, n_mels)
    if not tasks:
        return
    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=_mp_context(),
        initializer=init_worker,
        initargs=(config.model_dump(mode="json"), symbols.to_dict()),
    )
    clips = _ClipProgress(bar)
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about any native thread at fork (see _mp_context).
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
            futures = {executor.submit(process_chunk, t): t for t in tasks}
        # Every task is submitted (so every fork happens) before the bar's thread starts.
        clips.start(total, done)
        _gather(futures, {j.index: j for j in jobs}, layout, n_mels, clips)
        executor.shutdown(wait=True)
    except BaseException:
        _terminate(executor)
        raise
    finally:
        clips.stop()


def _chunk_tasks(jobs: list[ShardJob], wavs_dir: Path, workers: int) -> list[ChunkTask]:
    """The pool tasks of the clips of `jobs` not rejected while parsing; sets each job's
    count of pending tasks."""
    candidates = {j.index: [e for e in j.entries if not e.rejected] for j in jobs}
    size = chunk_size(sum(len(c) for c in candidates.values()), workers)
    tasks = [
        ChunkTask(j.index, tuple(candidates[j.index][i : i + size]), str(wavs_dir))
        for j in jobs
        for i in range(0, len(candidates[j.index]), size)
    ]
    by_index = {j.index: j for j in jobs}
    for t in tasks:
        by_index[t.shard].pending += 1
    return tasks


def _write_job_shard(job: ShardJob, layout: StoreLayout, n_mels: int) -> None:
    arrays, meta = assemble_shard(job.index, job.signature, job.entries, job.results, n_mels)
    write_shard(layout, job.index, arrays, meta)
    job.results.clear()  # the shard is on disk; free its features


def _gather(
    futures: dict[Future, ChunkTask], by_index: dict[int, ShardJob], layout: StoreLayout, n_mels: int,
    clips: _ClipProgress,
) -> None:
    """Collect task results as they finish, writing each shard when its last task is in."""
    pending = set(futures)
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            task = futures.pop(fut)
            try:
                results = fut.result()
            except Exception as err:
                raise RuntimeError(
                    f"preparing clips of shard {task.shard} failed ({type(err).__name__}: "
                    f"{str(err).rstrip('.')}); finished shards are kept and rerunning prepare resumes"
                ) from err
            job = by_index[task.shard]
            job.results.update((r["line"], r) for r in results)
            job.pending -= 1
            if job.pending == 0:
                _write_job_shard(job, layout, n_mels)
            clips.advance(len(task.entries))


class _ClipProgress:
    """The progress bar (or none) in clips, with the rate of the clips computed by this run."""

    def __init__(self, bar: Any) -> None:
        self.bar, self.task_id, self.t0, self.computed = bar, None, 0.0, 0

    def start(self, total: int, done: int) -> None:
        if self.bar is not None:
            self.bar.start()
            self.task_id = self.bar.add_task("prepare", total=total, completed=done, rate="")
        self.t0 = time.monotonic()

    def advance(self, n: int) -> None:
        self.computed += n
        if self.bar is not None:
            rate = self.computed / max(time.monotonic() - self.t0, 1e-6)
            self.bar.update(self.task_id, advance=n, rate=f"{rate:.1f} clips/s")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
