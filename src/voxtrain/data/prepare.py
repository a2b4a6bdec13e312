"""`voxtrain prepare`: an LJSpeech-format corpus -> a resumable feature store.

Steps: check the folder, parse metadata.csv line by line (bad lines become rejections),
compute features shard by shard in a process pool (finished shards of an interrupted
run are reused), split train/val, then write statistics, the manifest, rejected.tsv
and finally COMPLETE. See store.py for the layout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxtrain.artifacts.store import (
    STORE_VERSION,
    read_complete_shard,
    shard_json_path,
)
from voxtrain.atomic import remove_temp_files, write_json_atomic
from voxtrain.config import Config
from voxtrain.data.corpus import Entry, PrepareError, check_corpus_dir, parse_metadata
from voxtrain.data.finalize import finalize_store
from voxtrain.data.pool import ShardJob, progress_bar, run_jobs

__all__ = ["PrepareError", "PrepareReport", "prepare_corpus"]


@dataclass
class PrepareReport:
    kept: int
    rejected_by_reason: dict[str, int]
    hours: float
    seconds_wall: float
    out_dir: Path
    n_train: int = 0
    n_val: int = 0
    shards_total: int = 0
    shards_reused: int = 0
    fingerprint: str = ""
    rejected_path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def summary(self) -> str:
        """A few human lines for the command line."""
        lines = [
            f"kept {self.kept} clips ({self.hours:.2f} h; {self.n_train} train, {self.n_val} val) "
            f"in {self.seconds_wall:.1f} s -> {self.out_dir}",
        ]
        if self.shards_reused:
            lines.append(f"reused {self.shards_reused} of {self.shards_total} shards from an earlier run")
        if self.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in self.rejected_by_reason.items())
            lines.append(f"rejected {self.rejected} ({reasons}): see {self.rejected_path}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["rejected_path"] = str(self.rejected_path) if self.rejected_path else None
        return d


def _feature_config(config: Config) -> dict[str, Any]:
    return {"audio": config.audio.model_dump(mode="json"), "text": config.text.model_dump(mode="json")}


def _check_out_config(out_dir: Path, wanted: dict[str, Any]) -> None:
    """Refuse to add features computed with other settings to an existing store."""
    path = out_dir / "config.json"
    if not path.is_file():
        write_json_atomic(path, wanted)
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        stored = None
    if stored == wanted:
        return
    diffs = []
    for section in ("audio", "text"):
        old, new = (stored or {}).get(section, {}), wanted[section]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs.append(f"{section}.{key}: {old.get(key)!r} (stored) vs {new.get(key)!r} (now)")
    raise PrepareError(
        f"{out_dir} holds features made with different settings, refusing to mix them:\n  "
        + "\n  ".join(diffs or ["unreadable config.json"])
        + f"\nUse another --out folder, or delete {out_dir} to start over."
    )


@contextlib.contextmanager
def _store_lock(out_dir: Path):
    """One writer per store: a second prepare into the same folder fails instead of racing."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield None
        return
    fd = os.open(out_dir / ".prepare.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PrepareError(f"another `voxtrain prepare` is writing to {out_dir}; wait for it to finish") from None
        except OSError:  # a filesystem without locks (some network mounts): carry on unguarded
            pass
        yield fd
    finally:
        os.close(fd)


def _signature(entries: tuple[Entry, ...], wavs_dir: Path, settings: str) -> str:
    """What a shard's content depends on; a finished shard is reused only if this matches."""
    h = hashlib.sha256(settings.encode("utf-8"))
    for e in entries:
        h.update(f"\n{e.line}|{e.reason}|".encode())
        h.update(e.raw)
        if e.audio:
            try:
                st = (wavs_dir / e.audio).stat()
                h.update(f"|{e.audio}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"|gone")
    return h.hexdigest()


def prepare_corpus(
    corpus_dir: str | Path,
    out_dir: str | Path,
    config: Config,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Validate a corpus and write its feature store to out_dir (resuming a stopped run).

    Raises PrepareError only when the corpus folder is wrong, out_dir holds features of
    other settings, or no clip is usable; every other problem is one rejected clip.
    """
    from voxtrain.text import SymbolTable

    t0 = time.monotonic()
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    check_corpus_dir(corpus_dir)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    shards_dir = out_dir / "shards"
    shards_dir.mkdir(exist_ok=True)
    with _store_lock(out_dir) as lock_fd:
        feature_config = _feature_config(config)
        _check_out_config(out_dir, feature_config)  # before touching anything of a store we refuse
        # Until the new COMPLETE is written the store is being rebuilt, not complete.
        (out_dir / "COMPLETE").unlink(missing_ok=True)
        remove_temp_files(out_dir)
        remove_temp_files(shards_dir)
        symbols = SymbolTable.default()
        if len(symbols) > 32767:
            raise PrepareError(f"symbol table of {len(symbols)} symbols does not fit the int16 phoneme arrays")
        settings = json.dumps(
            {"version": STORE_VERSION, "features": feature_config, "symbols": symbols.to_dict()},
            sort_keys=True,
        )

        entries = parse_metadata(corpus_dir)
        size = config.data.shard_size
        wavs_dir = corpus_dir / "wavs"
        metas: dict[int, dict[str, Any]] = {}
        jobs: list[ShardJob] = []
        reused_entries = 0
        n_shards = (len(entries) + size - 1) // size
        for k in range(n_shards):
            shard_entries = tuple(entries[k * size : (k + 1) * size])
            sig = _signature(shard_entries, wavs_dir, settings)
            meta = read_complete_shard(shards_dir, k, sig)
            if meta is not None:
                metas[k] = meta
                reused_entries += len(shard_entries)
            else:
                shard_json_path(shards_dir, k).unlink(missing_ok=True)
                jobs.append(ShardJob(k, sig, shard_entries))
        _remove_stale_shards(shards_dir, n_shards)

        bar = progress_bar(progress)
        run_jobs(jobs, out_dir, wavs_dir, config, symbols, workers, lock_fd, bar, reused_entries)
        for job in jobs:
            metas[job.index] = read_complete_shard(shards_dir, job.index, job.signature)
            if metas[job.index] is None:
                raise RuntimeError(f"shard {job.index} was not written completely; rerun prepare to resume")

        summary = finalize_store(out_dir, [metas[k] for k in range(n_shards)], config, symbols, feature_config)
    rejected_by_reason = dict(sorted(Counter(r["reason"] for m in metas.values() for r in m["rejected"]).items()))
    if summary["clips"] == 0:
        counts = ", ".join(f"{k}: {v}" for k, v in rejected_by_reason.items()) or "metadata.csv has no entries"
        raise PrepareError(f"no usable clip in {corpus_dir} ({counts}); every line and why: {out_dir / 'rejected.tsv'}")
    return PrepareReport(
        kept=summary["clips"],
        rejected_by_reason=rejected_by_reason,
        hours=summary["hours"],
        seconds_wall=time.monotonic() - t0,
        out_dir=out_dir,
        n_train=summary["train_clips"],
        n_val=summary["val_clips"],
        shards_total=n_shards,
        shards_reused=n_shards - len(jobs),
        fingerprint=summary["fingerprint"],
        rejected_path=out_dir / "rejected.tsv",
        warnings=summary["warnings"],
    )


def _remove_stale_shards(shards_dir: Path, n_shards: int) -> None:
    """Shards past the end of a metadata.csv that shrank are not part of this store."""
    for p in shards_dir.glob("shard_*"):
        number = p.name[len("shard_") :].split(".", 1)[0]
        if number.isdigit() and int(number) >= n_shards:
            p.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m voxtrain.data.prepare CORPUS --out OUT`: the same as `voxtrain prepare`."""
    import argparse

    from voxtrain.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m voxtrain.data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default=None, help="YAML config (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        report = prepare_corpus(args.corpus, args.out, config, workers=args.workers, progress=not args.no_progress)
    except (ConfigError, PrepareError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(json.dumps(report.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    # Re-enter through the package module so pool workers unpickle functions from
    # `voxtrain.data.prepare`, not from a second copy living in __main__.
    from voxtrain.data.prepare import main as _main

    sys.exit(_main())
