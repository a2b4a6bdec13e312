"""A damaged feature store is refused before training reads it, naming the file.

One real store is prepared per module; each test damages a copy of it the way disks, copies
and hands do (a truncated array, one flipped byte, an edited manifest) and opens it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtrain.config import config_from_dict
from voxtrain.data import FeatureStore, StoreError, prepare_corpus

SR = 22050
N_CLIPS, SHARD_SIZE = 6, 2  # three shards


def _config():
    return config_from_dict({
        "audio": {"min_seconds": 0.3, "max_seconds": 8.0},
        "data": {"val_size": 1, "shard_size": SHARD_SIZE},
    })


def _tone(seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * 0.2
    wav *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return np.concatenate([np.zeros(3000), wav, np.zeros(3000)]).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus, store) prepared once; tests damage copies of the store."""
    root = tmp_path_factory.mktemp("damage")
    corpus = root / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    lines = []
    for k in range(N_CLIPS):
        sf.write(corpus / "wavs" / f"c{k}.wav", _tone(0.8 + 0.1 * k, 110 + 12 * k), SR, subtype="PCM_16")
        lines.append(f"c{k}|Clip number {k}.|Clip number {k}.")
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n")
    prepare_corpus(corpus, root / "store", _config(), workers=1, progress=False)
    return corpus, root / "store"


@pytest.fixture
def store(prepared, tmp_path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(prepared[1], copy)
    return copy


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _rewrite_manifest(store: Path, edit) -> None:
    """Edit the manifest and, like a deliberate copy from elsewhere would, COMPLETE's fingerprint."""
    manifest = store / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    edit(records)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    complete = json.loads((store / "COMPLETE").read_text())
    complete["fingerprint"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    (store / "COMPLETE").write_text(json.dumps(complete))


def _make_old(store: Path) -> None:
    """Turn the store into what version 1 wrote: no sizes or checksums anywhere."""
    complete = json.loads((store / "COMPLETE").read_text())
    del complete["shard_files"]
    (store / "COMPLETE").write_text(json.dumps({**complete, "version": 1}))
    for meta_path in (store / "shards").glob("shard_*.json"):
        meta = json.loads(meta_path.read_text())
        del meta["files"]
        meta_path.write_text(json.dumps({**meta, "version": 1}))


def test_intact_store_records_and_verifies_every_array(store):
    complete = json.loads((store / "COMPLETE").read_text())
    arrays = sorted((store / "shards").glob("*.npy"))
    assert len(arrays) == 12 and sorted(complete["shard_files"]) == [p.name for p in arrays]
    for p in arrays:
        assert complete["shard_files"][p.name] == {
            "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        meta = json.loads((p.parent / (p.name.split(".")[0] + ".json")).read_text())
        assert meta["files"][p.name.split(".")[1]] == complete["shard_files"][p.name]
    opened = FeatureStore(store)
    assert opened.integrity["checked"] == "sha256"
    assert opened.integrity["bytes"] == sum(p.stat().st_size for p in arrays)


def test_truncated_array_is_named(store):
    path = store / "shards" / "shard_00000.mel.npy"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 160)
    with pytest.raises(StoreError, match=rf"shard_00000\.mel\.npy: truncated: {size - 160} bytes, prepare wrote "
                                         rf"{size}.*rerun `voxtrain prepare CORPUS --out {store}`"):
        FeatureStore(store)


@pytest.mark.parametrize("where", ["data", "header"])
def test_flipped_byte_is_named(store, where):
    path = store / "shards" / "shard_00001.pitch.npy"
    _flip(path, path.stat().st_size - 7 if where == "data" else 50)
    with pytest.raises(StoreError, match=r"shard_00001\.pitch\.npy: .*voxtrain prepare") as info:
        FeatureStore(store)
    if where == "data":  # the size and header are intact: only the checksum can tell
        assert "differs from the SHA-256 recorded by prepare" in str(info.value)


def test_missing_array_is_named(store):
    (store / "shards" / "shard_00002.energy.npy").unlink()
    with pytest.raises(StoreError, match=r"shard_00002\.energy\.npy: missing"):
        FeatureStore(store)


def test_edited_manifest_line_is_named(store):
    manifest = store / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3].replace('"n_frames": ', '"n_frames": 1')
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match=r"manifest\.jsonl changed after prepare finished.*COMPLETE"):
        FeatureStore(store)


def test_manifest_that_does_not_tile_the_shards_is_named(store):
    def shift_second_clip(records):
        second = [r for r in records if r["shard"] == 0][1]
        second["frame_offset"] += 3

    _rewrite_manifest(store, shift_second_clip)
    with pytest.raises(StoreError, match=r"manifest\.jsonl: clip 'c1' has frame_offset \d+, but the clips before "
                                         r"it in shard 0 end at \d+"):
        FeatureStore(store)


def test_manifest_shorter_than_the_shard_is_named(store):
    def shorten_last_clip(records):
        [r for r in records if r["shard"] == 1][-1]["n_frames"] -= 1

    _rewrite_manifest(store, shorten_last_clip)
    with pytest.raises(StoreError, match=r"shard_00001\.mel\.npy: shape \(\d+, 80\), but the manifest's clips"):
        FeatureStore(store)


def test_manifest_with_a_bad_field_is_named(store):
    _rewrite_manifest(store, lambda records: records[2].update(n_phonemes="12"))
    with pytest.raises(StoreError, match=r"manifest\.jsonl: line 3 \(clip 'c2'\): n_phonemes is '12'"):
        FeatureStore(store)


def test_old_store_without_checksums_opens_with_sizes_checked(store, caplog):
    intact = FeatureStore(store)
    _make_old(store)
    with caplog.at_level(logging.WARNING, logger="voxtrain.artifacts.store"):
        old = FeatureStore(store)
    assert old.integrity["checked"] == "sizes"
    assert "before voxtrain recorded shard checksums" in caplog.text
    assert all(np.array_equal(old.item(i)["mel"], intact.item(i)["mel"]) for i in range(len(old)))
    path = store / "shards" / "shard_00002.phonemes.npy"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 2)
    with pytest.raises(StoreError, match=r"shard_00002\.phonemes\.npy: truncated: \d+ bytes, its header describes"):
        FeatureStore(store)


def test_rerunning_prepare_repairs_only_the_damaged_shard(prepared, store):
    corpus, original = prepared
    _flip(store / "shards" / "shard_00001.mel.npy", 1000)
    report = prepare_corpus(corpus, store, _config(), workers=1, progress=False)
    assert report.shards_total == 3 and report.shards_reused == 2
    repaired, intact = FeatureStore(store), FeatureStore(original)
    assert (store / "manifest.jsonl").read_bytes() == (original / "manifest.jsonl").read_bytes()
    for i in range(len(intact)):
        assert np.array_equal(repaired.item(i)["mel"], intact.item(i)["mel"]), i


def test_rerunning_prepare_upgrades_an_old_store(prepared, store):
    _make_old(store)
    report = prepare_corpus(prepared[0], store, _config(), workers=1, progress=False)
    assert report.shards_reused == 0  # nothing proves the old arrays intact: all recomputed
    assert FeatureStore(store).integrity["checked"] == "sha256"


def test_array_replaced_after_open_is_refused_at_first_read(store):
    opened = FeatureStore(store)
    path = store / "shards" / "shard_00000.pitch.npy"
    np.save(path, np.load(path)[:-5])  # a valid .npy, 5 rows short: slices would come back short
    with pytest.raises(StoreError, match=r"shard_00000\.pitch\.npy: changed since the store was opened"):
        opened.item(0)


def test_train_refuses_a_damaged_store_before_training(store, tmp_path):
    from conftest import _env, write_config

    _flip(store / "shards" / "shard_00002.energy.npy", 200)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "voxtrain.cli", "train", "--features", str(store), "--run", str(run),
           "--config", str(write_config(tmp_path / "cfg.yaml"))]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    # The closing error names the file on one line, whatever the table folded (a long path does).
    closing = proc.stderr.rpartition("pre-flight failed")[2]
    assert "shard_00002.energy.npy" in closing, proc.stderr[-2000:]
    assert not list(run.glob("checkpoints/*.pt"))
