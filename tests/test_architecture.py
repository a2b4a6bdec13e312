"""The layering rule of `make lint`: imports only point down, and no package cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "tools" / "check_layers.py"


def _check(package: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), str(package)], capture_output=True, text=True)


@pytest.fixture
def package_copy(tmp_path) -> Path:
    copy = tmp_path / "voxtrain"
    shutil.copytree(REPO / "src" / "voxtrain", copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n" + code + "\n", encoding="utf-8")


def test_the_repository_follows_the_rule(package_copy) -> None:
    r = _check(package_copy)
    assert r.returncode == 0, r.stderr
    assert "imports only point down" in r.stdout


def test_an_upward_import_inside_a_function_fails(package_copy) -> None:
    _append(package_copy / "artifacts" / "layout.py",
            "def _sneaky():\n    from voxtrain.train.engine import Trainer\n    return Trainer")
    r = _check(package_copy)
    assert r.returncode == 1
    assert "voxtrain/artifacts/layout.py" in r.stderr and "artifacts (artifacts) imports train (work)" in r.stderr


def test_a_relative_upward_import_fails(package_copy) -> None:
    _append(package_copy / "model" / "losses.py", "from ..artifacts import records  # noqa")
    r = _check(package_copy)
    assert r.returncode == 1 and "model (domain) imports artifacts (artifacts)" in r.stderr


def test_a_cycle_within_one_layer_fails(package_copy) -> None:
    # synth and evaluation are both work-layer units: allowed to import each other one way only.
    _append(package_copy / "synth.py", "from voxtrain import evaluation  # noqa")
    _append(package_copy / "evaluation.py", "import voxtrain.synth  # noqa")
    r = _check(package_copy)
    assert r.returncode == 1 and "import cycle between evaluation, synth" in r.stderr


def test_operations_never_import_training(package_copy) -> None:
    _append(package_copy / "ops" / "listing.py", "import voxtrain.train.state  # noqa")
    r = _check(package_copy)
    assert r.returncode == 1 and "ops must not import train" in r.stderr


def test_a_module_outside_every_layer_is_refused(package_copy) -> None:
    (package_copy / "helpers.py").write_text("from voxtrain.config import Config  # noqa\n")
    r = _check(package_copy)
    assert r.returncode == 1 and "`helpers` is in no layer" in r.stderr
