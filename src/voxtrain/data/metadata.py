"""Reading an LJSpeech-format corpus folder: layout checks and metadata.csv parsing.

metadata.csv is parsed as bytes, one line at a time, so that one bad line (stray bytes
from a text editor, a missing column, a hostile id) becomes one rejected entry with a
reason instead of aborting a preparation of 13,000 clips.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac")

LJSPEECH_LAYOUT = (
    "An LJSpeech-format corpus folder looks like:\n"
    "  CORPUS/metadata.csv   one clip per line: id|text|normalized_text (or id|text)\n"
    "  CORPUS/wavs/ID.wav    one audio file per id (.wav or .flac)"
)


class PrepareError(RuntimeError):
    """The corpus folder is unusable, or nothing usable is left after validation."""


@dataclass(frozen=True)
class Entry:
    """One non-empty metadata line: either a candidate clip or a rejection (reason set)."""

    line: int
    id: str
    text: str = ""
    source_text: str = ""  # what is phonemized: the normalized column when present
    audio: str = ""  # file name inside wavs/
    reason: str = ""
    detail: str = ""
    raw: bytes = b""

    @property
    def rejected(self) -> bool:
        return bool(self.reason)


def check_corpus_dir(corpus_dir: Path) -> None:
    """Raise PrepareError naming what is missing when corpus_dir is not an LJSpeech folder."""
    if not corpus_dir.is_dir():
        raise PrepareError(f"corpus folder not found: {corpus_dir}\n{LJSPEECH_LAYOUT}")
    missing = []
    if not (corpus_dir / "metadata.csv").is_file():
        missing.append(f"{corpus_dir / 'metadata.csv'} (file)")
    if not (corpus_dir / "wavs").is_dir():
        missing.append(f"{corpus_dir / 'wavs'} (folder)")
    if missing:
        raise PrepareError(
            f"{corpus_dir} is not an LJSpeech-format corpus: missing " + " and ".join(missing) + "\n" + LJSPEECH_LAYOUT
        )


def unsafe_id_reason(clip_id: str, wavs_real: Path) -> str:
    """Why `clip_id` cannot name a file inside wavs/, or "" when it is safe."""
    if not clip_id:
        return "empty id"
    if clip_id in (".", ".."):
        return f"id {clip_id!r} names a directory"
    bad = [c for c in ("/", "\\", "\x00", ":") if c in clip_id]
    if bad:
        return f"id contains {bad[0]!r}; ids must be plain file names"
    if any(ord(c) < 32 for c in clip_id):
        return "id contains control characters"
    if os.path.isabs(clip_id):
        return "id is an absolute path"
    # Belt and braces: whatever the characters, the joined path must stay directly in wavs/.
    # normpath (not resolve) so a user's symlinked audio files inside wavs/ stay allowed.
    for ext in AUDIO_EXTENSIONS:
        candidate = Path(os.path.normpath(wavs_real / f"{clip_id}{ext}"))
        if candidate.parent != wavs_real:
            return f"id resolves outside wavs/ ({candidate})"
    return ""


def _decode_error_detail(raw: bytes, err: UnicodeDecodeError, file_offset: int) -> str:
    bad = raw[err.start : err.end]
    return (
        f"invalid UTF-8 byte(s) 0x{bad.hex()} at byte offset {err.start} of the line "
        f"(offset {file_offset + err.start} in metadata.csv)"
    )


def parse_metadata(corpus_dir: Path) -> list[Entry]:
    """Every non-empty line of metadata.csv as an Entry, in file order.

    Rejected at this stage (reason codes): bad_encoding, bad_columns, unsafe_id,
    duplicate_id, empty_text, missing_wav. Blank and whitespace-only lines are skipped.
    """
    data = (corpus_dir / "metadata.csv").read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM from a Windows editor is not part of the first id
        data = data[3:]
        base = 3
    else:
        base = 0
    wavs_real = (corpus_dir / "wavs").resolve()
    try:
        present = set(os.listdir(wavs_real))  # one listdir instead of a stat per clip
    except OSError:
        present = set()
    seen: set[str] = set()
    entries: list[Entry] = []
    offset = base
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line_offset = offset
        offset += len(raw) + 1
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        entries.append(_parse_line(number, raw, line_offset, wavs_real, present, seen))
    return entries


def _parse_line(number: int, raw: bytes, file_offset: int, wavs_real: Path, present: set[str], seen: set[str]) -> Entry:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        guess = raw.split(b"|", 1)[0].decode("utf-8", "replace").strip()
        return Entry(number, guess, reason="bad_encoding", detail=_decode_error_detail(raw, err, file_offset), raw=raw)
    cols = line.split("|")
    clip_id = cols[0].strip()
    if len(cols) not in (2, 3):
        return Entry(
            number,
            clip_id,
            reason="bad_columns",
            detail=f"{len(cols)} '|'-separated columns; expected 3 (id|text|normalized) or 2 (id|text)",
            raw=raw,
        )
    why = unsafe_id_reason(clip_id, wavs_real)
    if why:
        return Entry(number, clip_id, reason="unsafe_id", detail=why, raw=raw)
    if clip_id in seen:
        return Entry(number, clip_id, reason="duplicate_id", detail="id already used on an earlier line", raw=raw)
    seen.add(clip_id)
    text = cols[1].strip()
    source = cols[2].strip() if len(cols) == 3 and cols[2].strip() else text
    if not source:
        return Entry(number, clip_id, text=text, reason="empty_text", detail="text is empty", raw=raw)
    audio = next((clip_id + ext for ext in AUDIO_EXTENSIONS if clip_id + ext in present), "")
    if not audio:
        return Entry(
            number,
            clip_id,
            text=text,
            reason="missing_wav",
            detail=f"neither wavs/{clip_id}.wav nor wavs/{clip_id}.flac exists",
            raw=raw,
        )
    return Entry(number, clip_id, text=text, source_text=source, audio=audio, raw=raw)
