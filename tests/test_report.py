"""The report page (RUN/report.html): written from a real run, then loaded in headless Chromium,
which must draw every plot and decode every clip's metadata from the real WAV data."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from voxtrain.artifacts.layout import RunDir
from voxtrain.report import refresh_report, write_report
from voxtrain.report.svg import MAX_POINTS, nice_ticks, thin, tick_labels

STEPS = [50, 100, 150, 200, 250, 300]
VAL_MEL = [0.9, 0.7, 0.55, 0.6, 0.58, 0.57]  # the best checkpoint is the one at step 150
WER = [0.6, 0.42, 0.33, 0.27, 0.235, 0.215]  # levelling off above 0.2, then crossing it
SIMILARITY = [0.5, 0.6, 0.66, 0.7, 0.72, 0.73]
EVAL_CLIPS = {200: 2, 300: 2}  # listening-score WAVs at these steps
VAL_CLIP_STEPS = [150, 200, 250, 300]  # one validation WAV each
ALIGNMENT_SIZE = (60, 24)
BROWSER_MARGIN_S = 120  # a margin for a loaded machine; the page says when it is done


# -- a real run with evaluations --------------------------------------------------------------
def png(width: int, height: int) -> bytes:
    """A real grey-gradient PNG (what the validator writes is a PNG too)."""
    rows = b"".join(b"\x00" + bytes((x * 255 // max(width - 1, 1)) for x in range(width)) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _eval_record(i: int, step: int) -> dict:
    record = {"type": "eval", "step": step, "time": 1.0e9 + step, "wer": WER[i], "cer": WER[i] / 2,
              "dnsmos_ovrl": 2.0 + i / 5, "similarity": SIMILARITY[i], "seconds": 3.0, "sentences": 2,
              "errors": {}}
    if step == 250:  # a scorer that failed: its score is missing and its message is shown
        record.pop("similarity")
        record["errors"] = {"speaker": "GE2E weights could not be loaded"}
    return record


@pytest.fixture(scope="module")
def scored_run(trained, corpus_dir, tmp_path_factory) -> tuple[RunDir, dict[str, float]]:
    """A copy of the 300-step micro run with validation and listening-score records, their WAVs
    (real clips of the corpus), a second checkpoint, an alignment image, targets in its config
    and a torn last metrics line. Returns the run and each WAV's duration by file path."""
    run = RunDir(tmp_path_factory.mktemp("report") / "run")
    shutil.copytree(trained.parent.parent, run.root)
    shutil.copy(run.checkpoint(300), run.checkpoint(150))
    lines = []
    for i, step in enumerate(STEPS):
        lines.append({"type": "val", "step": step, "time": 1.0e9 + step, "loss_mel": VAL_MEL[i], "loss_total": 2.0})
        lines.append(_eval_record(i, step))
    torn = json.dumps({"type": "train", "step": 301, "time": 1.0e9})[:25]  # a writer killed mid-line
    with open(run.metrics, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in lines) + torn)
    cfg = yaml.safe_load(run.config.read_text())
    # A longer schedule than the 300 steps trained (a first stage, as with --until-step): the
    # forecast looks as far as max_steps.
    cfg["training"]["max_steps"] = 3000
    cfg["training"]["targets"] = {"wer": 0.2, "val_mel": 0.6, "similarity": {"value": 0.9}}
    cfg["evaluation"]["enabled"] = True  # the micro config turns the listening scores off
    run.config.write_text(yaml.safe_dump(cfg))
    wavs = iter(sorted((corpus_dir / "wavs").glob("*.wav")))
    durations = {}
    placed = [(run.eval_sample_dir(s), n) for s, n in EVAL_CLIPS.items()] + [(run.sample_dir(s), 1)
                                                                            for s in VAL_CLIP_STEPS]
    for directory, n in placed:
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            dest = directory / run.sample_name(i)
            shutil.copy(next(wavs), dest)
            durations[str(dest)] = sf.info(str(dest)).duration
    run.alignment_image(300).write_bytes(png(*ALIGNMENT_SIZE))
    return run, durations


# -- headless Chromium over the DevTools pipe -------------------------------------------------
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("headless Chromium is not installed (Debian package `chromium`: apt-get install chromium)")


class Browser:
    """Headless Chromium driven through --remote-debugging-pipe (fd 3 in, fd 4 out, messages
    ending in NUL): the test waits for the page's own promise instead of guessing a delay."""

    def __init__(self, profile: Path):
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # Out of the way of 3 and 4, so the dup2 calls in the child cannot clobber each other.
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome))
        for fd in (to_chrome, from_chrome):
            os.close(fd)

        def wire() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, pass_fds=(3, 4))
        os.close(child_in)
        os.close(child_out)
        self._buffer, self._next_id, self._events = b"", 0, []

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise AssertionError(f"Chromium did not answer within {BROWSER_MARGIN_S}s")
            data = os.read(self._read, 1 << 20)
            if not data:
                raise AssertionError(f"Chromium exited ({self.proc.poll()})")
            self._buffer += data
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + BROWSER_MARGIN_S
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self._events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + BROWSER_MARGIN_S
        while True:
            found = next((e for e in self._events if e.get("method") == method and e.get("sessionId") == session), None)
            if found is not None:
                self._events.remove(found)
                return found
            self._events.append(self._message(deadline))

    def render_check(self, page: Path) -> dict:
        """Open `page` and return the JSON summary its script makes once every clip settled."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session)
        self.send("Page.navigate", session, url=page.as_uri())
        self.wait_event("Page.loadEventFired", session)
        result = self.send("Runtime.evaluate", session, expression="window.reportCheck", awaitPromise=True,
                           returnByValue=True)
        assert "exceptionDetails" not in result, result
        dom = self.send("Runtime.evaluate", session, expression="document.getElementById('render-check').textContent",
                        returnByValue=True)
        assert json.loads(dom["result"]["value"]) == result["result"]["value"]  # the DOM carries it too
        return result["result"]["value"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except AssertionError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._read)
        os.close(self._write)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def newest_three_bytes(run: RunDir) -> int:
    """An audio budget that embeds the newest three clips (step 300: two listening-score clips,
    one validation clip); the older ones become links."""
    newest = [run.eval_sample_dir(300) / run.sample_name(i) for i in range(2)] + [run.sample_dir(300) /
                                                                                 run.sample_name(0)]
    return sum(p.stat().st_size for p in newest)


# -- tests ------------------------------------------------------------------------------------
def test_page_renders_plots_and_plays_every_clip(scored_run, browser):
    run, durations = scored_run
    page = write_report(run.root, embed_audio_bytes=newest_three_bytes(run))
    assert page == run.report
    summary = browser.render_check(page)

    train_steps = [r["step"] for r in map(json.loads, run.metrics.read_text().splitlines()[:-1])
                   if r["type"] == "train"]
    plots = {p["id"]: p for p in summary["plots"]}
    expected = {"plot-train": len(train_steps), "plot-val_mel": len(STEPS), "plot-wer": len(STEPS),
                "plot-cer": len(STEPS), "plot-dnsmos_ovrl": len(STEPS), "plot-similarity": len(STEPS) - 1}
    assert set(plots) == set(expected), plots.keys()
    for plot_id, n in expected.items():
        plot = plots[plot_id]
        assert plot["width"] > 100 and plot["height"] > 50, plot
        for series in plot["series"]:
            assert series["n"] == series["vertices"] == series["markers"] == n, (plot_id, series)
            assert series["width"] > 0 and series["height"] > 0, (plot_id, series)
    assert len(plots["plot-train"]["series"]) == 2  # total and mel

    audio = summary["audio"]
    assert len(audio) == len(durations)
    assert [a["embedded"] for a in audio] == [True] * 3 + [False] * (len(durations) - 3)  # newest first
    assert all(a["error"] is None and a["duration"] for a in audio), audio
    played = sorted(a["duration"] for a in audio)
    assert played == pytest.approx(sorted(durations.values()), abs=0.02)
    assert summary["images"] == [{"width": ALIGNMENT_SIZE[0], "height": ALIGNMENT_SIZE[1]}]


def test_page_content_and_self_containment(scored_run):
    run, durations = scored_run
    html = write_report(run, embed_audio_bytes=newest_three_bytes(run)).read_text()
    # Nothing from outside the page but the run's own WAVs, linked relatively.
    assert not re.search(r"<link|@import|url\(|<script[^>]+src", html)
    external = [u for u in re.findall(r'(?:src|href)="([^"]+)"', html) if not u.startswith("data:")]
    assert external and all(not re.match(r"^[a-z]+:", u) and (run.root / u).resolve().is_file() for u in external)
    assert {(run.root / u).resolve() for u in external} < {Path(p).resolve() for p in durations}
    assert len(external) == len(durations) - 3
    # The best checkpoint (lowest validation mel loss, step 150) is marked, with its scores.
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html.split('class="checkpoints"')[1].split("</table>")[0])
    best = [r for r in rows if "best" in r]
    assert len(best) == 1 and best[0].startswith("<td>150</td>") and f"<td>{WER[2]:.3g}</td>" in best[0]
    # Targets: wer is forecast and its band drawn; val_mel is met; the failed scorer is named.
    targets = html.split('class="targets"')[1].split("</table>")[0]
    assert re.search(r"<td>wer</td>.*?badge on_track", targets) and "on track for step" in targets
    assert re.search(r"<td>val_mel</td>.*?badge met", targets)
    assert 'class="forecast"' in html.split('id="plot-wer"')[1].split("</svg>")[0]
    assert "speaker: GE2E weights could not be loaded" in html
    assert "the last line is incomplete" in html
    # The validation sentence labels its clip.
    cfg = yaml.safe_load(run.config.read_text())
    assert html.count(cfg["training"]["validation_sentences"][0]) == len(VAL_CLIP_STEPS)


def test_pages_of_runs_with_pieces_missing(tmp_path):
    # A run directory holding nothing yet, then one with a torn line and no evaluation.
    run = RunDir(tmp_path / "fresh")
    run.create()
    html = write_report(run).read_text()
    assert "metrics.jsonl does not exist yet" in html and "config.yaml not found" in html
    assert "No checkpoint saved yet" in html and "No audio samples yet" in html
    run.metrics.write_text('{"type": "event", "event": "start", "step": 0, "time": 1}\n{"type": "tr')
    run.config.write_text("training:\n  max_steps: nope\n")
    html = write_report(run).read_text()
    assert "the last line is incomplete" in html and "could not be loaded" in html and "max_steps" in html
    assert not list(run.root.glob(".report.html.tmp*"))  # written atomically, nothing left behind


def test_refresh_never_raises(tmp_path):
    said = []
    assert refresh_report(tmp_path / "missing", log=said.append) is None
    assert len(said) == 1 and "report page not updated" in said[0] and "no run directory" in said[0]
    run = RunDir(tmp_path / "run")
    run.create()
    run.report.mkdir()  # a directory where the page goes: the write fails
    assert refresh_report(run, log=said.append) is None and len(said) == 2


def test_long_history_is_thinned_to_a_light_page(tmp_path):
    run = RunDir(tmp_path / "long")
    run.create()
    n = 20_000
    run.metrics.write_text("".join(json.dumps({"type": "train", "step": s, "time": s / 10, "loss_total": 1 + 1 / s,
                                               "loss_mel": 0.5 + 1 / s}) + "\n" for s in range(1, n + 1)))
    html = write_report(run).read_text()
    series = [(int(a), int(b)) for a, b in re.findall(r'data-n="(\d+)" data-drawn="(\d+)"', html)]
    assert len(series) == 2 and all(a == n and MAX_POINTS // 2 < b <= MAX_POINTS for a, b in series)
    assert len(html) < 120_000
    points = [(float(s), float(s % 7)) for s in range(1, 1001)]
    thinned = thin(points, 100)
    assert len(thinned) <= 100 and thinned[-1] == points[-1]
    assert sum(y for _, y in thinned[:-1]) / (len(thinned) - 1) == pytest.approx(3.0, abs=0.1)  # means, not samples


def test_axis_labels_tell_close_ticks_apart():
    # A score that moves in its third decimal (DNSMOS 3.238-3.262) gets distinct labels.
    labels = tick_labels(nice_ticks(3.238, 3.262))
    assert len(set(labels)) == len(labels) == 5 and labels[0] == "3.240"
    assert tick_labels(nice_ticks(0.4, 0.62)) == ["0.4", "0.45", "0.5", "0.55", "0.6"]
