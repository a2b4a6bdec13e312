"""Reading an LJSpeech-format corpus folder: layout checks and metadata.csv parsing.

metadata.csv is parsed as bytes, one line at a time, so that one bad line (stray bytes
from a text editor, a missing column, a hostile id) becomes one rejected entry with a
reason instead of aborting a preparation of 13,000 clips. Before any line is parsed, the
whole file decides what its columns mean (`detect_layout`): a multi-speaker file read
line by line would have its speaker names taken for the text, with no error anywhere.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voxtrain.errors import VoxtrainError

# The keys of voxtrain.audio.io.AUDIO_FORMATS, in the same order (a test holds them equal).
# Not imported from there: this module is imported with the feature store, which training
# workers load without soundfile and the rest of the audio stack.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")

LJSPEECH_LAYOUT = (
    "An LJSpeech-format corpus folder looks like:\n"
    "  CORPUS/metadata.csv   one clip per line: id|text|normalized_text (or id|text)\n"
    "  CORPUS/wavs/ID.wav    one audio file per id (.wav, .flac, .ogg, .opus or .mp3)"
)

TWO_COLUMNS, LJSPEECH, SPEAKER = "id|text", "id|text|normalized_text", "id|speaker|text"


class PrepareError(VoxtrainError, RuntimeError):
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


@dataclass(frozen=True)
class Layout:
    """What the columns of metadata.csv hold, decided from the whole file by detect_layout."""

    columns: str  # TWO_COLUMNS, LJSPEECH or SPEAKER
    lines: int = 0  # 3-column lines the decision rests on
    echoes: int = 0  # of those, lines whose third column repeats the second's words
    speakers: tuple[tuple[str, int], ...] = ()  # SPEAKER: (name, lines), most frequent first
    assumed: str = ""  # set when the evidence was weak: what was assumed, and why


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _echoes(text: str, third: str) -> bool:
    words = _words(text)
    third_words = set(_words(third))
    return bool(words) and 2 * sum(w in third_words for w in words) >= len(words)


def _names_speaker(second: str, third: str) -> bool:
    n_words = len(_words(second))
    return len(second) <= 40 and 1 <= n_words <= 3 and len(_words(third)) > n_words


def detect_layout(rows: Iterable[Sequence[str]]) -> Layout:
    """The layout of metadata.csv from the columns of all its lines.

    Only lines of three columns with a non-empty third column decide; two-column lines are
    `id|text` whatever the others are. Of those N lines, a line *echoes* when at least half
    the words of column 2 (case and punctuation ignored) appear in column 3, as in
    LJSpeech, where column 3 is column 2 normalized (numbers spelled out, abbreviations
    expanded). Column 2 *looks like speakers* when N >= 2, it has at most N/2 distinct
    values, and on at least 90% of the lines it is a short name (1-3 words, at most 40
    characters) with more words in column 3 than in column 2: piper's `id|speaker|text`.

    - no such line: TWO_COLUMNS;
    - at least 80% echo: LJSPEECH;
    - column 2 looks like speakers and at most 20% echo: SPEAKER;
    - anything else: LJSPEECH with `assumed` saying so, since nothing proves either reading.
    """
    pairs = [(r[1].strip(), r[2].strip()) for r in rows if len(r) == 3 and r[2].strip()]
    n = len(pairs)
    if not n:
        return Layout(TWO_COLUMNS)
    echoes = sum(_echoes(a, b) for a, b in pairs)
    if echoes >= 0.8 * n:
        return Layout(LJSPEECH, n, echoes)
    values = Counter(a for a, _ in pairs)
    named = sum(_names_speaker(a, b) for a, b in pairs)
    if n >= 2 and 2 * len(values) <= n and named >= 0.9 * n and echoes <= 0.2 * n:
        return Layout(SPEAKER, n, echoes, tuple(values.most_common()))
    assumed = (
        f"metadata.csv: column 3 repeats the words of column 2 on only {echoes} of {n} three-column "
        f"lines, and column 2 ({len(values)} distinct values) does not look like speaker names: assumed "
        "LJSpeech's id|text|normalized_text, so column 3 is the text that is phonemized. If column 2 is "
        "a speaker, split the corpus per speaker (multi-speaker training is not supported yet)"
    )
    return Layout(LJSPEECH, n, echoes, assumed=assumed)


def speaker_layout_error(path: Path, layout: Layout) -> PrepareError:
    """The refusal of a metadata.csv whose second column names speakers."""
    shown = ", ".join(f"{name!r} ({count} lines)" for name, count in layout.speakers[:5])
    more = f" and {len(layout.speakers) - 5} more" if len(layout.speakers) > 5 else ""
    first = layout.speakers[0][0]
    if len(layout.speakers) == 1:
        todo = (
            f"It has one speaker, {first!r}: drop column 2 to make it LJSpeech format, e.g.\n"
            f"  cut -d'|' -f1,3 {path} > metadata.lj.csv   (then use that as metadata.csv)"
        )
    else:
        todo = (
            "Multi-speaker training is not supported yet: split the corpus per speaker into LJSpeech format "
            "(one folder per speaker, with that speaker's wavs/ and a metadata.csv of id|text lines), e.g.\n"
            f"  awk -F'|' '$2 == \"{first}\" {{print $1 \"|\" $3}}' {path} > {first}/metadata.csv"
        )
    values = f"{len(layout.speakers)} distinct short values" if len(layout.speakers) > 1 else "one short value"
    return PrepareError(
        f"{path} looks like the multi-speaker layout {SPEAKER} (piper's), not LJSpeech's {LJSPEECH}: "
        f"column 2 holds {values} repeated over {layout.lines} lines, column 3 the sentences. "
        f"Speakers: {shown}{more}.\n{todo}"
    )


_TRANSCRIPTS = (".normalized.txt", ".original.txt", ".trans.txt", ".txt", ".lab")
_MIC = re.compile(r"_mic\d$")  # VCTK 0.92: p225_001_mic1.flac is transcribed in p225_001.txt


def _speaker_folder(rel: Path) -> str:
    # The speaker is the shallowest folder that prefixes the file name (VCTK p225/p225_001,
    # LibriTTS 19/198/19_198_000000_000000), else the folder holding the file.
    for part in rel.parent.parts:
        if rel.stem == part or rel.stem.startswith((part + "_", part + "-")):
            return part
    return rel.parent.name


def speaker_tree(corpus_dir: Path, max_depth: int = 4, max_files: int = 200_000) -> str:
    """A description of the speaker-folder tree (VCTK, LibriTTS, LibriSpeech: audio in one
    folder per speaker, transcripts in text files) under corpus_dir, or "" when there is none.
    Walks at most max_depth folder levels and max_files files, so a wrong path stays fast."""
    audio: list[Path] = []
    texts: set[tuple[Path, str]] = set()  # (folder, stem) of each transcript file
    trans_dirs: set[Path] = set()  # folders with a LibriSpeech chapter transcript (*.trans.txt)
    kinds: Counter[str] = Counter()
    seen = 0
    for dirpath, dirnames, filenames in os.walk(corpus_dir):
        rel = Path(dirpath).relative_to(corpus_dir)
        dirnames[:] = sorted(dirnames) if len(rel.parts) < max_depth else []
        for name in filenames:
            low = name.lower()
            ending = next((e for e in _TRANSCRIPTS if low.endswith(e)), "")
            if ending:
                texts.add((rel, name[: -len(ending)]))
                kinds[ending] += 1
                if ending == ".trans.txt":
                    trans_dirs.add(rel)
            elif rel.parts and os.path.splitext(low)[1] in AUDIO_EXTENSIONS:
                audio.append(rel / name)
        seen += len(filenames)
        if seen >= max_files:
            break
    stems = {stem for _, stem in texts}
    keys = {a: {a.stem, _MIC.sub("", a.stem)} for a in audio}
    beside = [a for a in audio if a.parent in trans_dirs or any((a.parent, k) in texts for k in keys[a])]
    found = [a for a in audio if keys[a] & stems or a.parent in trans_dirs]
    if not found:
        return ""
    speakers = sorted({_speaker_folder(a) for a in found})
    kind = next((k for e, k in ((".normalized.txt", "LibriTTS"), (".trans.txt", "LibriSpeech")) if kinds[e]), "")
    kind = kind or ("VCTK/LibriTTS-style" if beside else "VCTK")
    where = "beside them" if 2 * len(beside) >= len(found) else "in a separate folder tree"
    exts = "/".join(sorted({a.suffix.lower() for a in found}))
    endings = "/".join(e for e in _TRANSCRIPTS if kinds[e])
    names = ", ".join(speakers[:4]) + (", ..." if len(speakers) > 4 else "")
    at_least = "at least " if seen >= max_files else ""
    return (
        f"looks like a {kind} tree: {at_least}{len(speakers)} speaker folders ({names}) with "
        f"{at_least}{len(found)} {exts} files and {endings} transcripts {where}"
    )


def check_corpus_dir(corpus_dir: Path) -> None:
    """Raise PrepareError naming what is missing when corpus_dir is not an LJSpeech folder."""
    if not corpus_dir.is_dir():
        raise PrepareError(f"corpus folder not found: {corpus_dir}\n{LJSPEECH_LAYOUT}")
    missing = []
    if not (corpus_dir / "metadata.csv").is_file():
        missing.append(f"{corpus_dir / 'metadata.csv'} (file)")
        tree = speaker_tree(corpus_dir)
        if tree:
            raise PrepareError(
                f"{corpus_dir} has no metadata.csv and {tree}. Speaker-folder corpora are not supported yet: "
                "convert one speaker to LJSpeech format (its audio files in wavs/, and a metadata.csv line "
                "ID|text per file, ID being the file name without its extension), then prepare that folder.\n"
                + LJSPEECH_LAYOUT
            )
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


class _AudioFiles:
    """The files of wavs/, listed once (one listdir instead of a stat per clip), and which
    of the audio formats this process's libsndfile decodes."""

    def __init__(self, wavs_real: Path) -> None:
        from voxtrain.audio.io import format_problem  # here: see AUDIO_EXTENSIONS

        try:
            self.present = set(os.listdir(wavs_real))
        except OSError:
            self.present = set()
        self.others: dict[str, list[str]] = defaultdict(list)  # id -> its files of other extensions
        for name in sorted(self.present):
            stem, ext = os.path.splitext(name)
            if ext not in AUDIO_EXTENSIONS:
                self.others[stem].append(name)
        self.problems = {ext: format_problem(ext) for ext in AUDIO_EXTENSIONS}
        self.several: list[list[str]] = []  # the files of each id that has more than one

    def find(self, clip_id: str) -> tuple[str, str, str]:
        """(file name, "", "") of the clip's audio, or ("", reason, detail)."""
        names = [clip_id + ext for ext in AUDIO_EXTENSIONS if clip_id + ext in self.present]
        usable = [n for n in names if not self.problems[os.path.splitext(n)[1]]]
        if usable:
            if len(names) > 1:
                self.several.append(names)
            return usable[0], "", ""
        if names:
            ext = os.path.splitext(names[0])[1]
            return "", "unsupported_format", (
                f"wavs/{names[0]}: {self.problems[ext]}; convert it to .wav or .flac "
                f"(e.g. ffmpeg -i {names[0]} {clip_id}.wav), or install a soundfile whose libsndfile decodes it"
            )
        if clip_id in self.others:
            other = self.others[clip_id][0]
            return "", "unsupported_format", (
                f"wavs/{other} is not a format voxtrain reads ({', '.join(AUDIO_EXTENSIONS)}, lower case); "
                f"convert or rename it"
            )
        return "", "missing_wav", f"no audio file wavs/{clip_id}.wav (nor {', '.join(AUDIO_EXTENSIONS[1:])})"

    def warnings(self) -> list[str]:
        if not self.several:
            return []
        return [
            f"{len(self.several)} ids have more than one audio file (e.g. wavs/{' and wavs/'.join(self.several[0])}): "
            f"used the first of {', '.join(AUDIO_EXTENSIONS)}"
        ]


@dataclass
class Metadata:
    entries: list[Entry]
    layout: Layout
    warnings: list[str] = field(default_factory=list)  # what was assumed, for the report


def _lines(data: bytes) -> list[tuple[int, bytes, int]]:
    """(line number, bytes without line end, byte offset in the file) of each non-blank line."""
    base = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # a Windows editor's BOM is not part of the first id
    out, offset = [], base
    for number, raw in enumerate(data[base:].split(b"\n"), start=1):
        line_offset, offset = offset, offset + len(raw) + 1
        raw = raw.rstrip(b"\r")
        if raw.strip():
            out.append((number, raw, line_offset))
    return out


def _columns(raw: bytes) -> list[str]:
    try:
        return raw.decode("utf-8").split("|")
    except UnicodeDecodeError:
        return []  # becomes a bad_encoding rejection; no evidence about the layout


def read_metadata(corpus_dir: Path) -> Metadata:
    """Every non-empty line of metadata.csv as an Entry, in file order, with the layout.

    Raises PrepareError when column 2 holds speaker names (see detect_layout). Rejected at
    this stage (reason codes): bad_encoding, bad_columns, unsafe_id, duplicate_id,
    empty_text, missing_wav, unsupported_format. Blank and whitespace-only lines are skipped.
    """
    path = corpus_dir / "metadata.csv"
    lines = _lines(path.read_bytes())
    layout = detect_layout(_columns(raw) for _, raw, _ in lines)
    if layout.columns == SPEAKER:
        raise speaker_layout_error(path, layout)
    wavs_real = (corpus_dir / "wavs").resolve()
    audio = _AudioFiles(wavs_real)
    seen: set[str] = set()
    entries = [_parse_line(number, raw, offset, wavs_real, audio, seen) for number, raw, offset in lines]
    warnings = [layout.assumed] if layout.assumed else []
    return Metadata(entries, layout, warnings + audio.warnings())


def parse_metadata(corpus_dir: Path) -> list[Entry]:
    """The entries of read_metadata(corpus_dir)."""
    return read_metadata(corpus_dir).entries


def _parse_line(number: int, raw: bytes, offset: int, wavs_real: Path, audio: _AudioFiles, seen: set[str]) -> Entry:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        guess = raw.split(b"|", 1)[0].decode("utf-8", "replace").strip()
        return Entry(number, guess, reason="bad_encoding", detail=_decode_error_detail(raw, err, offset), raw=raw)
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
    name, reason, detail = audio.find(clip_id)
    if reason:
        return Entry(number, clip_id, text=text, reason=reason, detail=detail, raw=raw)
    return Entry(number, clip_id, text=text, source_text=source, audio=name, raw=raw)
