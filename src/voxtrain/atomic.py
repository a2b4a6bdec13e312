"""Crash-safe file writes: a reader sees either the old file or the whole new one.

Write to a temporary name in the same directory, flush, fsync, rename over the final name,
fsync the directory. Used for checkpoints, exports, run metadata and feature-store files.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

_CHUNK = 4 << 20


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; not possible (nor needed) on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _slow_disk(seconds: float) -> None:
    # Short slices, like real write syscalls: Python runs signal handlers between them.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.02, max(end - time.monotonic(), 0)))


_TEMP_MARK = ".tmp"


def temp_path(path: Path) -> Path:
    """The temporary name `write_atomic` writes `path` under before the rename: hidden, in the
    same directory (a rename across filesystems is not atomic), unique per process."""
    return path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}")


def is_temp_file(path: Path) -> bool:
    """True for a temporary file of `write_atomic`: one left behind is a write that never
    finished (the process was killed) and is never valid."""
    name = Path(path).name
    return name.startswith(".") and _TEMP_MARK in name


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in `directory`; returns them."""
    removed = []
    if Path(directory).is_dir():
        for p in Path(directory).iterdir():
            if is_temp_file(p) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def write_atomic(data: memoryview | bytes, path: Path, slow: float = 0.0) -> None:
    """Write bytes to `path` atomically. On any error (ENOSPC included) the temporary file is
    removed and the error re-raised. `slow` seconds of delay per 4 MB chunk simulate a slow
    disk (tests kill processes in the middle of a write)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            view = memoryview(data)
            for offset in range(0, len(view), _CHUNK):
                f.write(view[offset : offset + _CHUNK])
                if slow:
                    f.flush()
                    _slow_disk(slow)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(text.encode("utf-8"), path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic((json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8"), path)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    import numpy as np  # here, not at the top: `voxtrain status` imports this module and no numpy

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_atomic(buffer.getbuffer(), path)
