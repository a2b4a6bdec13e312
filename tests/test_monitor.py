"""voxtrain monitor / status: snapshot facts on hand-written run dirs, and the live dashboard
watched in tmux while a real writer process appends metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_until
from voxtrain.artifacts.layout import RunDir
from voxtrain.artifacts.metrics_format import MetricsTail
from voxtrain.ops.monitor import monitor, print_status, sparkline, status_lines, text_lines
from voxtrain.ops.snapshot import run_snapshot

T0 = 1_700_000_000.0


def train(step: int, loss: float | str, target: int = 100, max_steps: int = 200, t: float | None = None) -> dict:
    # Wall clock: 2 steps/s. The logged steps_per_s (compute only) deliberately differs.
    return {"type": "train", "time": T0 + step / 2 if t is None else t, "step": step, "epoch": 0, "lr": 1e-3,
            "grad_norm": 1.0, "frames_per_s": 1000.0, "steps_per_s": 9.0, "padding_fraction": 0.1,
            "target_step": target, "max_steps": max_steps, "nonfinite_skipped": 0, "loss_total": loss,
            "loss_mel": loss / 2 if isinstance(loss, float) else loss, "loss_duration": 0.1}


def val(step: int, total: float, mel: float) -> dict:
    return {"type": "val", "time": T0 + step / 2 + 0.1, "step": step, "loss_total": total, "loss_mel": mel}


def event(name: str, step: int, t: float | None = None, **fields) -> dict:
    return {"type": "event", "time": T0 + step / 2 + 0.2 if t is None else t, "event": name, "step": step,
            **fields}


def start(step: int = 0, target: int = 100, max_steps: int = 200, t: float | None = None) -> dict:
    return event("start", step, T0 if t is None else t, mode="new", target_step=target, max_steps=max_steps)


def make_run(tmp_path: Path, records: list[dict], ckpts: dict[int, int] | None = None, torn: str = "") -> Path:
    run = RunDir(tmp_path / "run")
    run.create()
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)
    for step, size in (ckpts or {}).items():
        run.checkpoint(step).write_bytes(b"\0" * size)
    return run.root


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_finished_run(tmp_path):
    records = [start(target=100, max_steps=100)]
    records += [train(s, 10 / s, target=100, max_steps=100) for s in range(10, 101, 10)]
    records += [val(50, 1.0, 0.6), event("checkpoint_saved", 50, bytes=1000), val(100, 0.9, 0.5),
                event("checkpoint_saved", 100, bytes=1500),
                event("stop", 100, reason="reached target step 100", exit_code=0)]
    run = make_run(tmp_path, records, {50: 1000, 100: 1500})
    s = run_snapshot(run, now=T0 + 1000)
    assert s.state == "finished" and s.pid is None and s.exit_code == 0
    assert (s.step, s.target_step, s.max_steps) == (100, 100, 100)
    assert s.steps_per_s == pytest.approx(2.0)
    assert s.eta_target_s == 0 and s.eta_max_s == 0
    assert [(c.step, c.bytes, c.best) for c in s.checkpoints] == [(50, 1000, False), (100, 1500, True)]
    assert s.checkpoints_bytes == 2500 and s.last_checkpoint.step == 100
    assert s.best_step == 100 and s.best_val_mel == 0.5 and s.val_trend == "falling"
    assert s.elapsed_s == pytest.approx(50.2)  # first start -> the stop record, not "now"
    assert s.sessions == 1 and s.warnings == []
    assert s.loss == pytest.approx(0.1)
    assert s.loss_avg100 == pytest.approx(sum(10 / k for k in range(10, 101, 10)) / 10)
    assert "state: finished: reached target step 100" in text_lines(s)
    assert status_lines(s)[:2] == ["run: finished: reached target step 100", "step 100 / 100 (100.0%)"]


def test_dead_run_eta_from_wall_clock_speed(tmp_path):
    run = make_run(tmp_path, [start()] + [train(s, 4.0 / s * 10) for s in (10, 20, 30, 40)])
    rd = RunDir(run)
    rd.pid_file.write_text(json.dumps({"pid": dead_pid(), "started": T0, "host": "x"}) + "\n")
    rd.lock_file.touch()  # left behind by the killed trainer; nobody holds it
    s = run_snapshot(run, now=T0 + 500)
    assert s.state == "dead" and s.pid is None
    assert (s.step, s.target_step, s.max_steps) == (40, 100, 200)
    assert s.steps_per_s == pytest.approx(2.0)  # 30 steps in 15 s, not the logged 9.0
    assert s.eta_target_s == pytest.approx(30.0) and s.eta_max_s == pytest.approx(80.0)
    assert s.loss_avg100 == pytest.approx((4 + 2 + 4 / 3 + 1) / 4)
    assert s.loss_recent == pytest.approx([4.0, 2.0, 4 / 3, 1.0])
    assert s.elapsed_s == pytest.approx(20.0) and s.last_record_age_s == pytest.approx(480.0)
    assert any("crashed or was killed after step 40" in w for w in s.warnings)
    assert "remaining 30s to target, 1m20s to max_steps" in "\n".join(status_lines(s))


def test_stopped_before_target(tmp_path):
    run = make_run(tmp_path, [start(), train(10, 1.0), event("stop", 10, reason="stopped by SIGTERM", exit_code=0)])
    s = run_snapshot(run)
    assert s.state == "stopped" and s.stop_reason == "stopped by SIGTERM" and s.warnings == []


@pytest.mark.parametrize("content", [None, "", "\n\n"])
def test_not_started(tmp_path, content):
    rd = RunDir(tmp_path / "run")
    rd.create()
    rd.config.write_text("training:\n  max_steps: 500\n")
    if content is not None:
        rd.metrics.write_text(content)
    s = run_snapshot(rd.root)
    assert s.state == "not started" and s.step == 0 and s.max_steps == 500
    assert s.target_step is None and s.eta_target_s is None and s.checkpoints == []
    assert s.warnings == []
    assert "state: not started" in text_lines(s)


def test_torn_last_line_and_incremental_reading(tmp_path):
    run = make_run(tmp_path, [start(), train(10, 1.0), train(20, 0.9)], torn='{"type": "train", "time": 1')
    tail = MetricsTail(RunDir(run).metrics)
    s = run_snapshot(run, tail)
    assert s.step == 20 and s.metrics_torn_tail and s.metrics_bad_lines == 0 and s.warnings[0].startswith(
        "the trainer is not running")
    # The writer finishes the line and writes another: the same tail picks up both.
    rest = json.dumps(train(30, 0.8))[len('{"type": "train", "time": 1'):]
    with open(RunDir(run).metrics, "a") as f:
        f.write(rest + "\n" + "garbage{\n" + json.dumps(train(40, 0.7)) + "\n")
    s = run_snapshot(run, tail)
    assert s.step == 40 and not s.metrics_torn_tail and s.metrics_records == 5
    assert s.metrics_bad_lines == 1 and any("unreadable line" in w for w in s.warnings)


def test_rising_validation_warning(tmp_path):
    records = [start(target=1000, max_steps=1000)]
    for step in range(100, 601, 100):
        records.append(train(step, 3.0 - step / 1000, target=1000, max_steps=1000))
        if step >= 300:
            records.append(val(step, 1.0 + (step - 300) / 1000, 0.5 + (step - 300) / 2000))
    s = run_snapshot(make_run(tmp_path, records))
    assert s.val_trend == "rising" and s.val_count == 4 and s.val_loss == pytest.approx(1.3)
    assert s.best_step == 300
    [warning] = [w for w in s.warnings if "validation loss rising" in w]
    assert "steps 300-600" in warning and "best model (step 300)" in warning
    assert "↑ rising" in "\n".join(text_lines(s))


def test_falling_validation_gives_no_warning(tmp_path):
    records = [start(target=1000, max_steps=1000)]
    for step in range(100, 601, 100):
        records += [train(step, 3.0 - step / 1000, 1000, 1000), val(step, 2.0 - step / 1000, 1.0 - step / 2000)]
    s = run_snapshot(make_run(tmp_path, records))
    assert s.val_trend == "falling" and s.best_step == 600
    assert not any("validation loss rising" in w for w in s.warnings)


def test_skipped_saves_nonfinite_and_corrupt_warnings(tmp_path):
    run = make_run(tmp_path, [
        start(), train(10, 1.0),
        event("checkpoint_skipped", 20, reason="not enough free disk space", bytes=10, free=5),
        event("nonfinite_skip", 30, loss="nan", consecutive=1),
        event("checkpoint_skipped", 40, reason="disk full (ENOSPC) while writing", bytes=10, free=5),
        train(40, "nan"),
    ], {10: 100})
    with open(RunDir(run).metrics, "a") as f:  # reported after the file was written
        f.write(json.dumps(event("checkpoint_corrupt", 10, t=time.time() + 5, error="truncated")) + "\n")
    s = run_snapshot(run)
    assert s.counts == {"checkpoint_skipped": 2, "checkpoint_corrupt": 1, "nonfinite_skip": 1,
                        "export_skipped": 0, "out_of_memory_retry": 0, "tracker_failed": 0,
                        "listening_failed": 0}
    assert s.checkpoints[0].corrupt and s.nonfinite_skipped == 1
    warnings = "\n".join(s.warnings)
    assert "2 checkpoint save(s) SKIPPED, last at step 40: disk full (ENOSPC) while writing; none saved" in warnings
    assert "1 training step(s) skipped for a non-finite loss/gradient, last at step 30" in warnings
    assert "checkpoint ckpt-step00000010.pt is corrupt" in warnings
    assert s.loss != s.loss and s.loss_avg100 == pytest.approx(1.0)  # NaN shown, not averaged


def test_resume_rewinds_redone_steps(tmp_path):
    records = [start()] + [train(s, 1.0) for s in range(10, 61, 10)]  # killed after step 60
    records += [start(50, t=T0 + 100), train(60, 0.5, t=T0 + 105), train(70, 0.4, t=T0 + 110)]
    s = run_snapshot(make_run(tmp_path, records))
    assert s.sessions == 2 and s.step == 70
    assert s.loss_recent == [1.0] * 5 + [0.5, 0.4]  # the first session's step 60 was redone
    assert s.steps_per_s == pytest.approx(2.0)  # this session only: 10 steps in 5 s
    assert s.session_elapsed_s == pytest.approx(10.0) and s.elapsed_s == pytest.approx(110.0)


# A stand-in trainer with facts no other process shares: 160 MiB resident, 4 threads besides the
# main one, 3 child processes (which end when their stdin closes, i.e. with it).
HOLDER = """
import subprocess, sys, threading, time
from voxtrain.artifacts.lock import RunLock
from voxtrain.artifacts.layout import RunDir

ballast = b"\\1" * (160 << 20)  # written, so resident
children = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
            for _ in range(3)]
idle = threading.Event()
for _ in range(4):
    threading.Thread(target=idle.wait, daemon=True).start()
lock = RunLock(RunDir(sys.argv[1]), log=print).acquire()
print("locked", flush=True)
time.sleep(60)
"""
MB = 2**20


def test_running_with_live_lock(tmp_path):
    # The lock is held by another real process, as a trainer would hold it.
    run = make_run(tmp_path, [start(), train(10, 1.0), train(20, 0.9)])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        s = run_snapshot(run)
    finally:
        holder.kill()
        holder.wait()
    assert s.state == "running" and s.pid == holder.pid
    assert json.loads(RunDir(run).pid_file.read_text())["pid"] == holder.pid
    # The facts are the holder's own, not those of this process or of any other.
    assert (s.process.threads, s.process.children) == (5, 3), s.process
    assert 160 * MB <= s.process.rss < 224 * MB, s.process
    assert 0 < s.process.children_rss < 160 * MB, s.process  # the children's own memory, no ballast
    assert s.eta_target_s == pytest.approx(40.0)


def test_checkpoints_fit_by_the_run_config_margin(tmp_path):
    run = make_run(tmp_path, [start(), train(10, 1.0)], {10: 2**20})
    rd = RunDir(run)
    s = run_snapshot(run)  # no config.yaml: no margin known, so no figure rather than a guessed one
    assert s.checkpoints_fit is None and not any("low disk" in w for w in s.warnings)
    rd.config.write_text("checkpoint:\n  disk_margin_mb: 3\n")
    s = run_snapshot(run)
    assert s.checkpoints_fit == s.disk_free // 2**20 - 3 > 0
    rd.config.write_text("checkpoint:\n  disk_margin_mb: 1.0e+12\n")  # more than any disk
    s = run_snapshot(run)
    assert s.checkpoints_fit == 0 and any("low disk: the next checkpoint does not fit" in w for w in s.warnings)
    rd.config.write_text("checkpoint: [unclosed\n")
    assert run_snapshot(run).checkpoints_fit is None


# pydantic is allowed: a run's config.yaml is read through the config models, as everywhere.
IMPORT_PROBE = """
import sys
import voxtrain.ops.snapshot as snapshot
snapshot.run_snapshot(sys.argv[1])
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "numpy", "rich"}))
"""


def test_snapshot_stays_import_light(tmp_path):
    run = make_run(tmp_path, [start(), train(10, 1.0), val(10, 1.0, 0.5)], {10: 100})
    RunDir(run).config.write_text("checkpoint:\n  disk_margin_mb: 1\n")
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(run)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_run_dir(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        run_snapshot(tmp_path / "nope")
    assert print_status(tmp_path / "nope") == 1
    assert monitor(tmp_path / "nope", once=True) == 1
    assert "no run directory" in capsys.readouterr().err


JSON_KEYS = {
    "run", "name", "now", "state", "pid", "host", "stop_reason", "exit_code", "step", "target_step", "max_steps",
    "epoch", "loss", "loss_mel", "loss_avg100", "loss_recent", "lr", "grad_norm", "val_loss", "val_loss_mel",
    "val_step", "val_count", "val_trend", "best_step", "best_val_mel", "steps_per_s", "frames_per_s",
    "eta_target_s", "eta_max_s", "started", "session_started", "sessions", "elapsed_s", "session_elapsed_s",
    "last_record_time", "last_record_age_s", "checkpoints", "checkpoints_bytes", "last_checkpoint", "disk_free",
    "checkpoints_fit", "process", "gpu", "counts", "nonfinite_skipped", "log_file", "metrics_records",
    "metrics_bad_lines", "metrics_torn_tail", "warnings", "best_by", "best_value", "scores", "scores_step",
    "scores_seconds", "targets", "stop_cause",
}


def test_plain_json_and_status_output(tmp_path, capsys):
    run = make_run(tmp_path, [start(), train(10, 2.0), train(20, "nan")], {10: 2048})
    assert monitor(run, once=True, plain=True) == 0
    out = capsys.readouterr().out
    assert "state: dead" in out and "step 20 / 100 (20.0%), max_steps 200" in out
    assert "checkpoints: 1 using 2.0 KB; last step 10" in out
    assert monitor(run, as_json=True) == 0
    raw = capsys.readouterr().out
    assert "NaN" not in raw  # strict JSON
    data = json.loads(raw)
    assert data["state"] == "dead" and data["step"] == 20 and data["loss"] == "nan"
    assert data["eta_target_s"] == pytest.approx(40.0)
    assert set(data) == JSON_KEYS  # scripts read these names
    [row] = data["checkpoints"]
    assert row == dict(data["last_checkpoint"]) and set(row) == {"step", "file", "time", "bytes", "best", "corrupt",
                                                                   "error"}
    assert (row["step"], row["file"], row["bytes"], row["corrupt"]) == (10, "ckpt-step00000010.pt", 2048, False)
    assert print_status(run, as_json=True) == 0 and json.loads(capsys.readouterr().out)["step"] == 20
    assert print_status(run) == 0
    assert capsys.readouterr().out.startswith("run: dead\nstep 20 / 100")


def test_sparkline():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([2.0, 2.0]) == "▄▄" and sparkline([]) == "" and sparkline([None, float("nan")]) == ""
    assert sparkline([1.0, None, 3.0]) == "▁ █"
    assert sparkline(list(range(100)), width=10) == "▁▂▃▃▄▅▆▆▇█"  # bucket means 4.5 .. 94.5


WRITER = """
import sys, time
from pathlib import Path
from voxtrain.artifacts.metrics_format import MetricsWriter
from voxtrain.artifacts.lock import RunLock
from voxtrain.artifacts.layout import RunDir

run = RunDir(Path(sys.argv[1]))
run.create()
lock = RunLock(run, log=lambda msg: None).acquire()
w = MetricsWriter(run.metrics)
w.write("event", event="start", step=0, mode="new", target_step=1000, max_steps=2000)
step = 0
while True:
    step += 1
    w.write("train", step=step, epoch=0, lr=1e-3, grad_norm=1.0, frames_per_s=1000.0, steps_per_s=5.0,
            padding_fraction=0.1, target_step=1000, max_steps=2000, nonfinite_skipped=0,
            loss_total=5.0 / step ** 0.5, loss_mel=2.0 / step ** 0.5, loss_duration=0.1)
    time.sleep(0.2)
"""


@pytest.mark.timeout(300)
def test_live_dashboard_in_tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    run = tmp_path / "live"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    sock = f"test-{os.getpid()}"
    writer = subprocess.Popen([sys.executable, str(script), str(run)])

    def screen() -> str:
        return subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", "mon"], capture_output=True,
                              text=True).stdout

    # Every wait ends when the screen shows what it waits for; the timeout is only a margin for a
    # loaded machine (the monitor's start-up imports take seconds there).
    def wait_for(pred, what: str, timeout: float = 60.0) -> str:
        deadline, text = time.time() + timeout, ""
        while time.time() < deadline:
            text = screen()
            if pred(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"the dashboard never showed {what}; last screen:\n{text}")

    def step_on(text: str) -> int:
        m = re.search(r"step (\d+) / 1000", text)
        return int(m.group(1)) if m else -1

    try:
        wait_until(lambda: RunDir(run).metrics.is_file() and RunDir(run).metrics.stat().st_size > 0, 60,
                   "the writer's first record", writer)
        # `; sleep` keeps the pane (and any traceback) on screen if the monitor dies.
        cmd = f"{sys.executable} -m voxtrain.cli monitor {run} --interval 0.5; sleep 30"
        subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "mon", "-x", "160", "-y", "50", cmd],
                       check=True)
        first = step_on(wait_for(lambda t: "RUNNING" in t and step_on(t) >= 3, "RUNNING at step >= 3"))
        later = wait_for(lambda t: step_on(t) >= first + 5, f"a step beyond {first + 5}")
        assert f"pid {writer.pid}" in later and "max_steps 2000" in later and "steps/s" in later
        assert any(ch in later for ch in "▁▂▃▄▅▆▇█")  # the loss sparkline
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        dead = wait_for(lambda t: "DEAD" in t, "the killed writer as DEAD")
        assert "crashed or was killed" in dead and "RUNNING" not in dead
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
