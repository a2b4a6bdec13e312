"""The layering rule of `make lint`: imports only point down, no cycles between packages nor between
the modules of one package."""

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
    # data and report are both work-layer units: allowed to import each other one way only.
    _append(package_copy / "data" / "loader.py", "from voxtrain import report  # noqa")
    _append(package_copy / "report" / "svg.py", "import voxtrain.data.metadata  # noqa")
    r = _check(package_copy)
    assert r.returncode == 1 and "import cycle between data, report" in r.stderr


def test_operations_never_import_training(package_copy) -> None:
    _append(package_copy / "ops" / "listing.py", "import voxtrain.train.state  # noqa")
    r = _check(package_copy)
    assert r.returncode == 1 and "ops must not import train" in r.stderr


def test_a_module_outside_every_layer_is_refused(package_copy) -> None:
    (package_copy / "helpers.py").write_text("from voxtrain.config import Config  # noqa\n")
    r = _check(package_copy)
    assert r.returncode == 1 and "`helpers` is in no layer" in r.stderr


def _package(root: Path, files: dict[str, str]) -> Path:
    """A voxtrain tree of just `files` (path under the package -> source)."""
    package = root / "voxtrain"
    for rel, code in {"__init__.py": "", **files}.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(code + "\n", encoding="utf-8")
    return package


# ops/ holds a package __init__ that re-exports, a module that imports a sibling through
# `from <package> import <module>`, and one imported by it: a tree, no loop.
ONE_WAY = {
    "ops/__init__.py": "from voxtrain.ops.snapshot import Snapshot",
    "ops/snapshot.py": "from voxtrain.ops import warnings\n\nclass Snapshot:\n    pass",
    "ops/warnings.py": "from voxtrain.config import Config  # noqa",
    "config/__init__.py": "class Config:\n    pass",
}


def test_one_way_imports_between_the_modules_of_a_package_pass(tmp_path) -> None:
    r = _check(_package(tmp_path, ONE_WAY))
    assert r.returncode == 0, r.stderr
    assert "no cycles" in r.stdout


@pytest.mark.parametrize("back", [
    "def later():\n    from voxtrain.ops.snapshot import Snapshot\n    return Snapshot",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from voxtrain.ops.snapshot import Snapshot",
    "from . import snapshot",
    "import voxtrain.ops.snapshot",
], ids=["function level", "TYPE_CHECKING", "relative", "plain import"])
def test_a_circle_between_the_modules_of_a_package_fails(tmp_path, back: str) -> None:
    files = dict(ONE_WAY)
    files["ops/warnings.py"] += "\n" + back
    r = _check(_package(tmp_path, files))
    assert r.returncode == 1
    assert "import cycle between modules ops.snapshot, ops.warnings (voxtrain/ops/snapshot.py:1, " \
           "voxtrain/ops/warnings.py:" in r.stderr, r.stderr


def test_a_circle_round_three_modules_of_the_repository_fails(package_copy) -> None:
    _append(package_copy / "listening" / "asr.py", "from voxtrain.listening import dnsmos  # noqa")
    _append(package_copy / "listening" / "dnsmos.py", "def _later():\n    from .speaker import SpeakerReference")
    _append(package_copy / "listening" / "speaker.py", "from voxtrain.listening.asr import ASR  # noqa")
    r = _check(package_copy)
    assert r.returncode == 1
    assert "import cycle between modules listening.asr, listening.dnsmos, listening.speaker" in r.stderr, r.stderr
