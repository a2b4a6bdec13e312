"""voxtrain.malloc: freed tensor memory stays in the process for the next step to reuse."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# One "step": two 64 MiB activations, then both freed. Prints the MiB handed back to the
# kernel by each free (RSS before minus after), over three steps.
PROBE = r"""
import json, sys, psutil, torch
if sys.argv[1] == "tuned":
    from voxtrain.malloc import retain_freed_memory
    assert retain_freed_memory()
proc, released = psutil.Process(), []
for _ in range(3):
    a = torch.ones(64 << 20, dtype=torch.uint8)
    b = a + 1
    rss = proc.memory_info().rss
    del a, b
    released.append((rss - proc.memory_info().rss) >> 20)
print(json.dumps(released))
"""


def _released_mib(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc malloc only")
def test_tuned_malloc_keeps_freed_blocks_for_reuse() -> None:
    # Plain glibc munmaps large blocks on free, so every step faults its memory back in.
    assert min(_released_mib("plain")) >= 120
    assert max(_released_mib("tuned")) <= 2
