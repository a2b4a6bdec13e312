"""prepare_corpus and FeatureStore on real files in real worker processes.

Good clips are harmonic tones (prepare needs audio, not speech), or the espeak voice of
voxtrain.demo_corpus when that module is present; the bad cases are built by hand.
"""

from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import importlib.util
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from conftest import wait_until
from voxtrain.config import Config, config_from_dict
from voxtrain.data import FeatureStore, PrepareError, StoreError, prepare_corpus
from voxtrain.data.finalize import split_ids

SR = 22050
HOP = 256


def tone(seconds: float, f0: float = 140.0, sr: int = SR, seed: int = 0, pad: float = 0.15) -> np.ndarray:
    """A voiced-like harmonic tone with a slow vibrato, silence on both sides."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    freq = f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2
    wav = wav * np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05) + rng.normal(0, 1e-3, len(t))
    silence = np.zeros(int(pad * sr))
    return np.concatenate([silence, wav, silence]).astype(np.float32)


def write_meta(corpus: Path, lines: list[bytes]) -> None:
    (corpus / "metadata.csv").write_bytes(b"\n".join(lines) + b"\n")


def good_clips(corpus: Path, n: int) -> list[tuple[str, str]]:
    """n usable clips in corpus/wavs: (id, text)."""
    wavs = corpus / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("voxtrain.demo_corpus") is not None:
        from voxtrain.demo_corpus import make_corpus

        voice_dir = corpus.parent / f"{corpus.name}_voice"
        make_corpus(voice_dir, voice="espeak", n_sentences=n, progress=False)
        rows = []
        for raw in (voice_dir / "metadata.csv").read_text(encoding="utf-8").splitlines():
            if raw.strip():
                cols = raw.split("|")
                os.replace(voice_dir / "wavs" / f"{cols[0]}.wav", wavs / f"{cols[0]}.wav")
                rows.append((cols[0], cols[1]))
        return rows[:n]
    rows = []
    for i in range(n):
        clip_id = f"good{i}"
        sf.write(wavs / f"{clip_id}.wav", tone(1.0 + 0.3 * i, f0=110 + 15 * i, seed=i), SR, subtype="PCM_16")
        rows.append((clip_id, f"Tone number {i} is a good clip."))
    return rows


def test_config(**data: dict) -> Config:
    base = {"audio": {"min_seconds": 0.5, "max_seconds": 6.0}, "data": {"val_size": 2}}
    for section, values in data.items():
        base.setdefault(section, {}).update(values)
    return config_from_dict(base)


test_config.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[tuple[str, str]], list[str]]:
    corpus = tmp_path_factory.mktemp("bad") / "corpus"
    wavs = corpus / "wavs"
    good = good_clips(corpus, 6)
    lines = [f"{i}|{t}|{t}".encode() for i, t in good]
    w = lambda name, wav, sr=SR, **kw: sf.write(wavs / name, wav, sr, **kw)  # noqa: E731

    # Kept: a 48 kHz stereo clip and a FLAC clip, given as 2-column lines.
    stereo = np.stack([tone(1.5, 180, sr=48000, seed=7), 0.5 * tone(1.5, 180, sr=48000, seed=8)], axis=1)
    w("stereo48k.wav", stereo, 48000, subtype="FLOAT")
    w("flacclip.flac", tone(1.2, 150, seed=9), format="FLAC")
    lines += [b"stereo48k|A stereo clip at forty eight kilohertz.", b"flacclip|A clip stored as flac."]
    kept = [i for i, _ in good] + ["stereo48k", "flacclip"]

    w("truncated.wav", tone(2.0, seed=10), subtype="PCM_16")
    data = (wavs / "truncated.wav").read_bytes()
    (wavs / "truncated.wav").write_bytes(data[: len(data) // 2])
    (wavs / "textfile.wav").write_text("this is not audio at all\n" * 20)
    nan = tone(1.5, seed=11)
    nan[5000:5100] = np.nan
    w("nanwav.wav", nan, subtype="FLOAT")
    w("silent.wav", np.zeros(SR * 2, np.float32), subtype="PCM_16")
    w("toolong.wav", tone(7.0, seed=12), subtype="PCM_16")
    w("tooshort.wav", tone(0.25, seed=13), subtype="PCM_16")
    w("emptytext.wav", tone(1.0, seed=14), subtype="PCM_16")
    w("dots.wav", tone(1.0, seed=15), subtype="PCM_16")
    w("badbytes.wav", tone(1.0, seed=16), subtype="PCM_16")
    w("mismatch.wav", tone(0.6, seed=19), subtype="PCM_16")  # 51 frames for ~150 phoneme symbols
    # Real audio files that a broken id guard would read.
    sf.write(corpus / "evil.wav", tone(1.0, seed=17), SR)
    (wavs / "a").mkdir()
    sf.write(wavs / "a" / "b.wav", tone(1.0, seed=18), SR)
    first_good = good[0][0]
    lines += [
        b"missing|This clip has no audio file.|This clip has no audio file.",
        b"truncated|Cut in half.|Cut in half.",
        b"",
        b"textfile|A text file named wav.|A text file named wav.",
        b"nanwav|Samples that are not numbers.|Samples that are not numbers.",
        b"   \t ",
        b"emptytext|   |  ",
        b"dots|...|...",
        b"cols|one|two|three",
        b"justid",
        f"{first_good}|The same id again.|The same id again.".encode(),
        b"../evil|Escape the folder.|Escape the folder.",
        b"a/b|A sub folder.|A sub folder.",
        b"silent|Only zeros.|Only zeros.",
        b"toolong|Much too long.|Much too long.",
        b"tooshort|Too short.|Too short.",
        b"badbytes|caf\xe9 au lait|caf\xe9 au lait",
        b"mismatch|" + b"The transcript of another, much longer recording went here by mistake. " * 2,
    ]
    write_meta(corpus, lines)
    expected = {
        ("missing", "missing_wav"),
        ("truncated", "unreadable_audio"),
        ("textfile", "unreadable_audio"),
        ("nanwav", "nonfinite_samples"),
        ("emptytext", "empty_text"),
        ("dots", "no_phonemes"),
        ("cols", "bad_columns"),
        ("justid", "bad_columns"),
        (first_good, "duplicate_id"),
        ("../evil", "unsafe_id"),
        ("a/b", "unsafe_id"),
        ("silent", "silent_audio"),
        ("toolong", "too_long"),
        ("tooshort", "too_short"),
        ("badbytes", "bad_encoding"),
        ("mismatch", "text_too_long"),
    }
    return corpus, expected, kept


@pytest.fixture(scope="module")
def bad_store(bad_corpus, tmp_path_factory):
    corpus, _, _ = bad_corpus
    out = tmp_path_factory.mktemp("bad_store") / "features"
    report = prepare_corpus(corpus, out, test_config(data={"shard_size": 4}), workers=2, progress=False)
    return out, report


def read_rejected(out: Path) -> list[list[str]]:
    rows = (out / "rejected.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "line\tid\treason\tdetail"
    return [r.split("\t") for r in rows[1:]]


def test_every_bad_case_is_rejected_with_its_reason(bad_corpus, bad_store):
    corpus, expected, kept = bad_corpus
    out, report = bad_store
    rows = read_rejected(out)
    assert {(r[1], r[2]) for r in rows} == expected
    assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)
    assert all(r[3] for r in rows), "every rejection explains itself"
    bad_row = next(r for r in rows if r[2] == "bad_encoding")
    assert "offset" in bad_row[3]
    assert report.kept == len(kept)
    assert sum(report.rejected_by_reason.values()) == len(expected)
    assert report.rejected_by_reason["unreadable_audio"] == 2
    assert report.rejected_path == out / "rejected.tsv"


def test_good_clips_are_kept_with_correct_features(bad_corpus, bad_store):
    _, _, kept = bad_corpus
    out, _ = bad_store
    store = FeatureStore(out)
    assert sorted(r["id"] for r in store.records) == sorted(kept)
    assert len(store) == len(kept)
    assert sorted(store.split_indices("train") + store.split_indices("val")) == list(range(len(kept)))
    assert len(store.split_indices("val")) == 2
    for mel_file in sorted((out / "shards").glob("*.mel.npy")):
        assert np.load(mel_file, mmap_mode="r").dtype == np.float16
    for i, rec in enumerate(store.records):
        item = store.item(i)
        t = item["mel"].shape[0]
        assert item["mel"].shape == (t, 80) and item["mel"].dtype == np.float32
        assert item["pitch"].shape == (t,) and item["energy"].shape == (t,)
        assert item["phoneme_ids"].dtype == np.int64 and 0 < len(item["phoneme_ids"]) == rec["n_phonemes"]
        assert int(item["phoneme_ids"].max()) < len(store.symbols)
        assert abs(t - rec["seconds"] * SR / HOP) <= 1
        assert t == store.n_frames(i) == rec["n_frames"]
        assert np.isfinite(item["mel"]).all() and (item["pitch"] > 0).all()
    stereo = store.item(next(i for i, r in enumerate(store.records) if r["id"] == "stereo48k"))
    assert abs(np.median(stereo["pitch"]) - 180) < 10  # resampled correctly, not sped up
    assert store.audio_config["sample_rate"] == SR
    assert store.stats["pitch_std"] > 0 and store.stats["energy_std"] > 0
    assert json.loads((out / "COMPLETE").read_text())["fingerprint"] == store.fingerprint


def test_refuses_other_audio_settings_without_touching_the_store(bad_corpus, bad_store):
    corpus, _, _ = bad_corpus
    out, _ = bad_store
    cfg = test_config(audio={"hop_length": 200}, data={"shard_size": 4})
    before = _files_of(out)
    with pytest.raises(PrepareError, match="hop_length"):
        prepare_corpus(corpus, out, cfg, workers=1, progress=False)
    assert _files_of(out) == before  # every file there, its bytes and its mtime
    assert len(FeatureStore(out)) > 0


def _files_of(root: Path) -> dict[str, tuple[str, int]]:
    """(SHA-256, mtime in ns) of every file under root, by relative path."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_store_pickles_and_reopens_lazily(bad_store):
    import pickle

    out, _ = bad_store
    store = FeatureStore(out)
    first = store.item(0)
    clone = pickle.loads(pickle.dumps(store))
    assert np.array_equal(clone.item(0)["mel"], first["mel"])


def _ended(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE  # nobody may reap an orphan
    except psutil.NoSuchProcess:
        return True


class DirectoryEvents:
    """inotify (Linux) on one directory: `wait_for` returns when a file of a name pattern is created
    or renamed into it, as the kernel reports it; no polling interval, no settle time."""

    IN_CREATE, IN_MOVED_TO = 0x100, 0x80

    def __init__(self, directory: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "inotify_init1"):
            pytest.skip("no inotify on this platform")
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            pytest.skip(f"no inotify here: {os.strerror(ctypes.get_errno())}")
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), self.IN_CREATE | self.IN_MOVED_TO) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")

    def __enter__(self) -> DirectoryEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def wait_for(self, pattern: str, timeout: float, proc: subprocess.Popen) -> str:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.fd], [], [], 0.5)  # wakes up at the event
            data = os.read(self.fd, 1 << 16) if ready else b""
            pos = 0
            while pos < len(data):  # struct inotify_event: wd, mask, cookie, len, name[len]
                length = struct.unpack_from("iIII", data, pos)[3]
                name = data[pos + 16 : pos + 16 + length].rstrip(b"\0").decode()
                pos += 16 + length
                if fnmatch.fnmatch(name, pattern):
                    return name
            if proc.poll() is not None:
                raise AssertionError(f"exited ({proc.returncode}) before {pattern}: {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern} within {timeout:g}s")


def _tone_corpus(corpus: Path, n: int) -> None:
    (corpus / "wavs").mkdir(parents=True)
    lines = []
    for i in range(n):
        sf.write(corpus / "wavs" / f"c{i:02d}.wav", tone(2.0 + 0.25 * (i % 5), 100 + 9 * i, seed=i), SR)
        lines.append(f"c{i:02d}|Clip {i}, a tone.|Clip {i}, a tone.".encode())
    lines.insert(3, b"nofile|No audio here.|No audio here.")
    lines.insert(7, b"blank|  |  ")
    write_meta(corpus, lines)


def test_interrupted_prepare_resumes_to_identical_store(tmp_path):
    corpus = tmp_path / "corpus"
    _tone_corpus(corpus, 12)
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    overrides = ["--set", "data.shard_size=2", "--set", "data.val_size=3"]
    cmd = [sys.executable, "-m", "voxtrain.cli", "prepare", str(corpus), "--out", str(resumed), "--workers", "1"]
    (resumed / "shards").mkdir(parents=True)  # what prepare makes first; watched before it starts
    with DirectoryEvents(resumed / "shards") as events:
        proc = subprocess.Popen(cmd + overrides, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # The kernel says when the first shard's completion marker is renamed into place: the parent
            # is frozen at once (SIGSTOP; its workers only compute, it writes every shard), then killed.
            events.wait_for("shard_*.json", 120, proc)
            proc.send_signal(signal.SIGSTOP)
            workers = psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    assert workers, "prepare ran no worker process"
    try:  # orphaned workers notice their parent is gone (within 0.5 s) and exit by themselves
        wait_until(lambda: all(_ended(w) for w in workers), 60, "the orphaned workers to exit")
    finally:
        for w in workers:
            if not _ended(w):
                w.kill()
    assert not (resumed / "COMPLETE").exists(), "killed too late to test resuming"
    with pytest.raises(StoreError, match="voxtrain prepare"):
        FeatureStore(resumed)
    done = {p.name: p.stat().st_mtime_ns for p in (resumed / "shards").glob("shard_*")}
    done_json = [n for n in done if n.endswith(".json")]
    assert 1 <= len(done_json) < 7

    cfg = test_config(data={"shard_size": 2, "val_size": 3}, audio={"min_seconds": 0.5, "max_seconds": 15.0})
    report = prepare_corpus(corpus, resumed, cfg, workers=2, progress=False)
    assert report.shards_total == 7 and report.shards_reused == len(done_json)
    for p in (resumed / "shards").glob("shard_*"):
        if p.name.split(".")[0] + ".json" in done_json:
            assert p.stat().st_mtime_ns == done[p.name], f"{p.name} was rewritten"
    full = prepare_corpus(corpus, straight, cfg, workers=1, progress=False)
    assert full.shards_reused == 0 and full.kept == report.kept == 12

    for name in ("manifest.jsonl", "rejected.tsv", "stats.json", "config.json", "COMPLETE"):
        assert (resumed / name).read_bytes() == (straight / name).read_bytes(), name
    a, b = FeatureStore(resumed), FeatureStore(straight)
    assert a.fingerprint == b.fingerprint and len(a) == len(b) == 12
    for i in range(len(a)):
        x, y = a.item(i), b.item(i)
        for key in ("mel", "pitch", "energy", "phoneme_ids"):
            assert np.array_equal(x[key], y[key]), (i, key)
    assert {r[1] for r in read_rejected(resumed)} == {"nofile", "blank"}

    # An audio file changed since its shard was written: only that shard is redone.
    wav = corpus / "wavs" / "c05.wav"
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = prepare_corpus(corpus, straight, cfg, workers=2, progress=False)
    assert again.shards_reused == 6 and again.fingerprint == full.fingerprint


def test_store_refuses_incomplete_or_missing(tmp_path):
    with pytest.raises(StoreError, match=r"voxtrain prepare .*--out"):
        FeatureStore(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.jsonl").write_text("")
    with pytest.raises(StoreError, match="not a complete feature store.*voxtrain prepare"):
        FeatureStore(tmp_path / "half")


def test_corpus_without_metadata_is_refused(tmp_path):
    (tmp_path / "corpus" / "wavs").mkdir(parents=True)
    with pytest.raises(PrepareError, match=r"metadata\.csv") as info:
        prepare_corpus(tmp_path / "corpus", tmp_path / "out", Config(), workers=1, progress=False)
    assert "wavs/ID.wav" in str(info.value)  # says what a corpus should look like
    with pytest.raises(PrepareError, match="corpus folder not found"):
        prepare_corpus(tmp_path / "nope", tmp_path / "out", Config(), workers=1, progress=False)


def test_nothing_usable_names_the_rejections(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    write_meta(corpus, [b"x1|No file.|No file.", b"x2|  |  ", b"x1|Again.|Again."])
    with pytest.raises(PrepareError, match=r"missing_wav: 1.*rejected\.tsv"):
        prepare_corpus(corpus, tmp_path / "out", Config(), workers=1, progress=False)
    assert {(r[1], r[2]) for r in read_rejected(tmp_path / "out")} == {
        ("x1", "missing_wav"),
        ("x2", "empty_text"),
        ("x1", "duplicate_id"),
    }
    assert not (tmp_path / "out" / "COMPLETE").exists()


def test_split_is_seeded_order_free_and_clamped():
    ids = [f"id{i}" for i in range(20)]
    val, warn = split_ids(ids, 5, seed=1)
    assert len(val) == 5 and not warn
    assert split_ids(list(reversed(ids)), 5, seed=1)[0] == val
    assert split_ids(ids, 5, seed=2)[0] != val
    val, warn = split_ids(ids[:6], 46, seed=1)
    assert len(val) == 3 and warn
    assert split_ids(ids[:2], 46, seed=1)[0].__len__() == 1
    assert split_ids(ids[:1], 46, seed=1)[0] == set()


def test_metadata_parsing_edge_cases(tmp_path):
    from voxtrain.data.metadata import parse_metadata

    corpus = tmp_path / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    for name in ("ok1.wav", "ok2.flac", "...wav"):
        (corpus / "wavs" / name).write_bytes(b"")
    raw = "\ufeffok1|Windows line end.|Windows line end.\r\nok2|Two columns, flac.\r\n".encode()
    for bad_id in ("..", ".", "/etc/passwd", "a\\b", "C:x", ""):
        raw += f"{bad_id}|Text.|Text.\n".encode()
    raw += b"  \n\n"
    (corpus / "metadata.csv").write_bytes(raw)
    entries = parse_metadata(corpus)
    good = [e for e in entries if not e.rejected]
    assert [(e.id, e.audio, e.source_text, e.line) for e in good] == [
        ("ok1", "ok1.wav", "Windows line end.", 1),
        ("ok2", "ok2.flac", "Two columns, flac.", 2),
    ]
    assert [e.reason for e in entries if e.rejected] == ["unsafe_id"] * 6


def test_second_prepare_into_the_same_store_is_refused(tmp_path):
    corpus = tmp_path / "corpus"
    write_meta(corpus, [f"{i}|{t}|{t}".encode() for i, t in good_clips(corpus, 2)])
    out = tmp_path / "out"
    out.mkdir()
    # The store lock is a POSIX lock, which belongs to a process: the other writer must be another process.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out / ".prepare.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PrepareError, match="another `voxtrain prepare`"):
            prepare_corpus(corpus, out, Config(), workers=1, progress=False)
    finally:
        holder.communicate("")  # closing its stdin ends the holder
    prepare_corpus(corpus, out, Config(), workers=1, progress=False)  # the lock went with its holder


HOLD_LOCK = """
import sys
from voxtrain.artifacts.lock import exclusive_lock
lock = exclusive_lock(sys.argv[1])
print("held" if lock is not None else "busy", flush=True)
sys.stdin.read()
"""
