"""The CLI's conventions, through real subprocesses: version, entry points, exit codes, `config show`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

import voxtrain
from voxtrain.config import Config

COMMANDS = ("prepare", "make-corpus", "train", "preflight", "train-vocoder", "status", "monitor", "stop",
            "checkpoints", "evaluate", "report", "synth", "export", "smoke-test", "config")


def voxtrain_cli(*args: str, cwd: Path | None = None, module: str = "voxtrain") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_version_is_the_package_version() -> None:
    for module in ("voxtrain", "voxtrain.cli"):
        r = voxtrain_cli("--version", module=module)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"voxtrain {voxtrain.__version__}\n"


def test_python_m_voxtrain_lists_every_command_and_completion() -> None:
    r = voxtrain_cli("--help")
    assert r.returncode == 0, r.stderr
    assert "Usage: voxtrain " in r.stdout
    for name in (*COMMANDS, "--install-completion", "--show-completion"):
        # A row of the options/commands table (rich or plain click), not the word anywhere in the help.
        assert re.search(rf"^[│|]? {{1,2}}{re.escape(name)}\s", r.stdout, re.M), f"{name} not listed:\n{r.stdout}"


def test_runtime_failure_exits_1_on_stderr_only(tmp_path) -> None:
    r = voxtrain_cli("synth", "--checkpoint", "missing.pt", "--text", "hi", "--out", "x.wav", cwd=tmp_path)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("error: ") and "missing.pt" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.wav").exists()


def test_missing_run_directory_is_a_runtime_failure(tmp_path) -> None:
    for command in (("checkpoints",), ("status",), ("monitor", "--once")):
        r = voxtrain_cli(command[0], str(tmp_path / "nope"), *command[1:])
        assert r.returncode == 1, (command, r.returncode, r.stdout, r.stderr)
        assert r.stdout == "" and "no run directory" in r.stderr, (command, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr


def test_usage_errors_exit_2(tmp_path) -> None:
    both = voxtrain_cli("synth", "--checkpoint", "m.pt", "--text", "hi", "--text-file", "t.txt", "--out", "x.wav",
                        cwd=tmp_path)
    suffix = voxtrain_cli("export", "m.pt", "weights.bin", cwd=tmp_path)
    unknown = voxtrain_cli("synth", "--no-such-option", cwd=tmp_path)
    for r, words in ((both, "--text-file"), (suffix, ".safetensors"), (unknown, "--no-such-option")):
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert r.stdout == "" and words in r.stderr and "Usage: voxtrain" in r.stderr, r.stderr


def test_config_show_prints_the_resolved_config() -> None:
    r = voxtrain_cli("config", "show", "--set", "training.lr=0.5")
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["training"]["lr"] == 0.5
    assert set(shown) == set(Config.model_fields)
    # Every default is filled in: the output equals the defaults with the one override applied.
    expected = Config().to_dict()
    expected["training"]["lr"] = 0.5
    assert shown == yaml.safe_load(yaml.safe_dump(expected))


def test_config_show_output_is_a_valid_config_file(tmp_path) -> None:
    first = voxtrain_cli("config", "show", "--set", "model.hidden=64", "--set", "model.heads=2")
    assert first.returncode == 0, first.stderr
    (tmp_path / "resolved.yaml").write_text(first.stdout)
    again = voxtrain_cli("config", "show", "--config", str(tmp_path / "resolved.yaml"))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_config_show_bad_key_exits_1_naming_it() -> None:
    r = voxtrain_cli("config", "show", "--set", "training.nope=1")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert "training.nope" in r.stderr and "unknown key" in r.stderr


def test_a_voxtrain_error_is_translated_by_the_app_itself(capsys) -> None:
    """Also when Python calls the app (no `main()`, no subprocess): error line on stderr, exit 1."""
    from voxtrain.cli import app

    code = app(["config", "show", "--set", "training.nope=1"], prog_name="voxtrain", standalone_mode=False)
    out = capsys.readouterr()
    assert code == 1 and out.out == ""
    assert out.err.startswith("error: ") and "training.nope" in out.err and "Traceback" not in out.err
