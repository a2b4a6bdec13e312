"""The data formats users bring: metadata.csv layouts, compressed audio, speaker-folder trees.

Real files only: corpora are written here with numpy + soundfile, then read by the same
functions `voxtrain prepare` uses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtrain.audio.io import AUDIO_FORMATS, format_problem, libsndfile_formats
from voxtrain.config import config_from_dict
from voxtrain.data import FeatureStore, PrepareError, prepare_corpus
from voxtrain.data.metadata import (
    AUDIO_EXTENSIONS,
    LJSPEECH,
    SPEAKER,
    TWO_COLUMNS,
    check_corpus_dir,
    detect_layout,
    read_metadata,
)

SR = 22050

# Lines of LJSpeech 1.1's metadata.csv: (id, text, normalized text when it differs).
LJSPEECH_ROWS = [
    ("LJ001-0001", "Printing, in the only sense with which we are at present concerned, differs from most if not "
     "from all the arts and crafts represented in the Exhibition", None),
    ("LJ001-0002", "in being comparatively modern.", None),
    ("LJ001-0003", "For although the Chinese took impressions from wood blocks engraved in relief for centuries "
     "before the woodcutters of the Netherlands, by a similar process", None),
    ("LJ001-0004", "produced the block books, which were the immediate predecessors of the true printed book,", None),
    ("LJ001-0005", "the invention of movable metal letters in the middle of the fifteenth century may justly be "
     "considered as the invention of the art of printing.", None),
    ("LJ001-0007", 'the earliest book printed with movable types, the Gutenberg, or "forty-two line Bible" of about '
     "1455,", 'the earliest book printed with movable types, the Gutenberg, or "forty-two line Bible" of about '
     "fourteen fifty-five,"),
    ("LJ001-0010", "Now, as all books not primarily intended as picture-books consist principally of types composed "
     "to form letterpress,", None),
    ("LJ002-0006", "1801.", "eighteen oh one."),
    ("LJ003-0011", "in Mr. Buxton's time, the 3rd of May", "in Mister Buxton's time, the third of May"),
]
LJSPEECH_SAMPLE = "".join(f"{i}|{t}|{n or t}\n" for i, t, n in LJSPEECH_ROWS)

PIPER_SPEAKERS = {"alice": 5, "bob": 4, "carol": 3}
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "A rainbow is a division of white light into many beautiful colors.",
    "Some have accepted it as a miracle without physical explanation.",
    "The birch canoe slid on the smooth planks.",
]


def tone(seconds: float = 1.0, f0: float = 150.0, sr: int = SR) -> np.ndarray:
    """A voiced-like harmonic tone between short silences (prepare needs audio, not speech)."""
    t = np.arange(int(seconds * sr)) / sr
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * 0.2
    wav *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    silence = np.zeros(int(0.15 * sr))
    return np.concatenate([silence, wav, silence]).astype(np.float32)


def corpus_with(root: Path, metadata: str, audio_ids: list[str] = ()) -> Path:
    """A corpus folder with this metadata.csv and a real WAV file per id of audio_ids."""
    (root / "wavs").mkdir(parents=True)
    (root / "metadata.csv").write_text(metadata, encoding="utf-8")
    for i, clip_id in enumerate(audio_ids):
        sf.write(root / "wavs" / f"{clip_id}.wav", tone(1.0, 120 + 10 * i), SR, subtype="PCM_16")
    return root


def piper_metadata(speakers: dict[str, int]) -> str:
    lines = []
    for name, count in speakers.items():
        lines += [f"{name}_{k:03d}|{name}|{SENTENCES[k % len(SENTENCES)]}" for k in range(count)]
    return "\n".join(lines) + "\n"


def cfg():
    return config_from_dict({"audio": {"min_seconds": 0.3, "max_seconds": 8.0}, "data": {"val_size": 1}})


# ---------------------------------------------------------------- metadata.csv layouts


def test_ljspeech_sample_is_read_as_text_and_normalized_text(tmp_path):
    ids = [line.split("|")[0] for line in LJSPEECH_SAMPLE.splitlines()]
    meta = read_metadata(corpus_with(tmp_path / "lj", LJSPEECH_SAMPLE, ids))
    assert meta.layout.columns == LJSPEECH and not meta.layout.assumed and meta.warnings == []
    assert meta.layout.lines == len(ids) and meta.layout.echoes >= len(ids) - 1  # only "1801." echoes nothing
    by_id = {e.id: e for e in meta.entries}
    assert not any(e.rejected for e in meta.entries)
    assert by_id["LJ001-0007"].text.endswith("of about 1455,")
    assert by_id["LJ001-0007"].source_text.endswith("of about fourteen fifty-five,")  # what is phonemized


def test_two_column_file(tmp_path):
    text = "".join(f"c{k}|{s}\n" for k, s in enumerate(SENTENCES))
    meta = read_metadata(corpus_with(tmp_path / "two", text, [f"c{k}" for k in range(len(SENTENCES))]))
    assert meta.layout.columns == TWO_COLUMNS and meta.warnings == []
    assert [e.source_text for e in meta.entries] == SENTENCES


def test_piper_multi_speaker_file_is_refused_and_the_store_kept(tmp_path, features):
    corpus = corpus_with(tmp_path / "piper", piper_metadata(PIPER_SPEAKERS), [])
    store = tmp_path / "store"
    shutil.copytree(features, store)
    before = {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()}
    from conftest import MICRO_CONFIG  # the store's own settings: only the layout can be refused

    with pytest.raises(PrepareError) as info:
        prepare_corpus(corpus, store, config_from_dict(MICRO_CONFIG), workers=1, progress=False)
    message = str(info.value)
    assert str(corpus / "metadata.csv") in message
    assert "id|speaker|text" in message and "3 distinct" in message and "12 lines" in message
    assert "'alice' (5 lines), 'bob' (4 lines), 'carol' (3 lines)" in message
    assert "not supported yet" in message and "split the corpus per speaker" in message
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()} == before
    assert len(FeatureStore(store)) > 0
    with pytest.raises(PrepareError, match="id\\|speaker\\|text"):
        prepare_corpus(corpus, tmp_path / "new", cfg(), workers=1, progress=False)
    assert not (tmp_path / "new").exists()


def test_single_speaker_column_says_how_to_drop_it(tmp_path):
    corpus = corpus_with(tmp_path / "one", piper_metadata({"jenny": 6}))
    with pytest.raises(PrepareError, match=r"(?s)one speaker, 'jenny'.*cut -d'\|' -f1,3"):
        read_metadata(corpus)


def test_identical_short_repeated_columns_are_ljspeech_not_speakers(tmp_path):
    # Column 2 has few distinct short values repeated over many lines, as a speaker column
    # would; column 3 repeating it is what tells them apart.
    text = "".join(f"c{k}|{w}|{w}\n" for k, w in enumerate(["Yes.", "No.", "Yes.", "Yes.", "No.", "Yes."]))
    meta = read_metadata(corpus_with(tmp_path / "same", text, [f"c{k}" for k in range(6)]))
    assert meta.layout.columns == LJSPEECH and meta.warnings == []


def test_layout_rule_edge_cases():
    pairs = [["a", "alice", SENTENCES[0]], ["b", "alice", SENTENCES[1]]]
    assert detect_layout(pairs).columns == SPEAKER  # two lines suffice when the evidence agrees
    assert detect_layout([]).columns == TWO_COLUMNS
    assert detect_layout([["a", "Text."], ["b", "Text", ""]]).columns == TWO_COLUMNS  # empty third column
    # Two-column lines never count: a mostly 2-column file with piper-like 3-column lines is still refused.
    assert detect_layout(pairs * 3 + [["c", "Just text."]] * 10).columns == SPEAKER
    # Every speaker on one line: no repetition, so no claim; assumed LJSpeech and said so.
    one_each = [[f"i{k}", f"spk{k}", s] for k, s in enumerate(SENTENCES)]
    layout = detect_layout(one_each)
    assert layout.columns == LJSPEECH and "assumed" in layout.assumed and "0 of 5" in layout.assumed
    # Column 3 unrelated to column 2, both long: the same, assumed and said.
    translated = [[f"i{k}", s, "Ein ganz anderer Satz auf Deutsch."] for k, s in enumerate(SENTENCES)]
    assert detect_layout(translated).assumed


def test_assumed_layout_reaches_the_report_and_complete(tmp_path):
    text = "".join(f"c{k}|{s}|{SENTENCES[(k + 1) % 5]}\n" for k, s in enumerate(SENTENCES[:3]))
    corpus = corpus_with(tmp_path / "odd", text, ["c0", "c1", "c2"])
    report = prepare_corpus(corpus, tmp_path / "out", cfg(), workers=1, progress=False)
    assert report.kept == 3
    assert any("assumed LJSpeech's id|text|normalized_text" in w for w in report.warnings)
    assert "warning: metadata.csv: column 3" in report.summary()
    complete = json.loads((tmp_path / "out" / "COMPLETE").read_text())
    assert complete["warnings"][0] == report.warnings[0]


# ---------------------------------------------------------------- audio formats


def test_extensions_are_the_audio_formats():
    assert AUDIO_EXTENSIONS == tuple(AUDIO_FORMATS)


def test_format_problem_names_the_format_and_the_library():
    here = libsndfile_formats()
    for ext, (fmt, subtype) in AUDIO_FORMATS.items():
        decodable = fmt in here and (not subtype or subtype in here[fmt])
        assert (format_problem(ext) == "") == decodable, ext
    # What an older libsndfile (before 1.1.0: no MPEG; before 1.0.29: no Opus) reports.
    old = {"WAV": {"PCM_16"}, "FLAC": {"PCM_16"}, "OGG": {"VORBIS"}}
    assert format_problem(".ogg", old) == ""
    assert "MP3" in format_problem(".mp3", old) and "libsndfile >= 1.1.0" in format_problem(".mp3", old)
    assert "OPUS" in format_problem(".opus", old) and "1.0.29" in format_problem(".opus", old)
    assert "not an audio format voxtrain reads" in format_problem(".m4a", old)


COMPRESSED = {".flac": ("FLAC", "PCM_16", SR), ".ogg": ("OGG", "VORBIS", SR), ".opus": ("OGG", "OPUS", 48000),
              ".mp3": ("MP3", "MPEG_LAYER_III", SR)}


def test_compressed_clips_are_used_or_refused_by_name(tmp_path):
    corpus = corpus_with(tmp_path / "formats", "", ["ref"])
    wavs = corpus / "wavs"
    lines = ["ref|A reference clip in wav."]
    for ext, (fmt, subtype, sr) in COMPRESSED.items():
        clip = f"clip{ext[1:]}"
        if format_problem(ext):  # this libsndfile cannot decode it (nor, then, encode it)
            (wavs / f"{clip}{ext}").write_bytes(b"\xff\xfb" + bytes(4000))
        else:
            sf.write(wavs / f"{clip}{ext}", tone(1.0, 150.0, sr), sr, format=fmt, subtype=subtype)
        lines.append(f"{clip}|A clip stored as {ext[1:]}.")
    (wavs / "fake.mp3").write_text("<html>404 Not Found</html>\n" * 40)  # a failed download
    (wavs / "phone.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(2000))
    sf.write(wavs / "both.wav", tone(1.0, 170.0), SR)
    sf.write(wavs / "both.flac", tone(1.0, 170.0), SR, format="FLAC")
    lines += ["fake|Not audio at all.", "phone|Recorded on a phone.", "both|Two files."]
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n")

    report = prepare_corpus(corpus, tmp_path / "out", cfg(), workers=2, progress=False)
    rows = [r.split("\t") for r in (tmp_path / "out" / "rejected.tsv").read_text().splitlines()[1:]]
    rejected = {r[1]: (r[2], r[3]) for r in rows}
    assert rejected["fake"][0] == "unreadable_audio" and "not a decodable MP3 file" in rejected["fake"][1]
    assert rejected["phone"][0] == "unsupported_format" and "wavs/phone.m4a" in rejected["phone"][1]
    for ext in COMPRESSED:
        clip = f"clip{ext[1:]}"
        if format_problem(ext):
            assert rejected[clip][0] == "unsupported_format" and ext in rejected[clip][1], ext
        else:
            assert clip not in rejected, (ext, rejected.get(clip))
    assert any("more than one audio file (e.g. wavs/both.wav and wavs/both.flac)" in w for w in report.warnings)

    store = FeatureStore(tmp_path / "out")
    items = {r["id"]: store.item(i) for i, r in enumerate(store.records)}
    reference = items["ref"]["mel"].shape[0]
    for ext in COMPRESSED:
        if not format_problem(ext):
            item = items[f"clip{ext[1:]}"]
            # Same 1 s tone: lossy encoder delay and padding move the trimmed length by a few frames only.
            assert abs(item["mel"].shape[0] - reference) <= 6, ext
            assert abs(np.median(item["pitch"]) - 150.0) < 8, ext  # decoded at the right speed


# ---------------------------------------------------------------- speaker-folder trees


def _clip(path: Path, text: str | None = None, *texts: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(0.2), SR, format="FLAC" if path.suffix == ".flac" else "WAV")
    for t in texts:
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(text or "Some words.")


def test_vctk_tree_is_named_not_supported(tmp_path):
    root = tmp_path / "VCTK-Corpus"
    for spk in ("p225", "p226", "p227"):
        for k in (1, 2):
            _clip(root / "wav48_silence_trimmed" / spk / f"{spk}_00{k}_mic1.flac", None,
                  root / "txt" / spk / f"{spk}_00{k}.txt")
    with pytest.raises(PrepareError) as info:
        prepare_corpus(root, tmp_path / "out", cfg(), workers=1, progress=False)
    message = str(info.value)
    assert "looks like a VCTK tree: 3 speaker folders (p225, p226, p227) with 6 .flac files" in message
    assert "in a separate folder tree" in message and "not supported yet" in message
    assert "wavs/" in message  # and what to convert to
    assert not (tmp_path / "out").exists()


def test_libritts_tree_is_named(tmp_path):
    root = tmp_path / "train-clean-100"
    for spk, chapter in (("19", "198"), ("26", "495"), ("26", "496")):
        stem = f"{spk}_{chapter}_000000_000000"
        folder = root / spk / chapter
        _clip(folder / f"{stem}.wav", None, folder / f"{stem}.normalized.txt", folder / f"{stem}.original.txt")
    with pytest.raises(PrepareError, match=r"LibriTTS tree: 2 speaker folders \(19, 26\) with 3 \.wav files"
                       r".*\.normalized\.txt/\.original\.txt transcripts beside them"):
        check_corpus_dir(root)


def test_plain_speaker_folders_with_text_beside(tmp_path):
    for spk in ("anna", "ben", "cleo"):
        _clip(tmp_path / "c" / spk / "one.wav", None, tmp_path / "c" / spk / "one.txt")
    with pytest.raises(PrepareError, match=r"VCTK/LibriTTS-style tree: 3 speaker folders \(anna, ben, cleo\)"
                       r".*\.txt transcripts beside"):
        check_corpus_dir(tmp_path / "c")


def test_audio_without_transcripts_gets_the_plain_message(tmp_path):
    _clip(tmp_path / "c" / "anna" / "one.wav")
    with pytest.raises(PrepareError, match="not an LJSpeech-format corpus: missing") as info:
        check_corpus_dir(tmp_path / "c")
    assert "speaker folders" not in str(info.value)
