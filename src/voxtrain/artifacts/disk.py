"""The one disk rule: how much free space a checkpoint save needs.

The checkpoint guard applies it before every save, pre-flight applies it to the whole run,
and the monitor uses it to say how many more checkpoints fit, so the three never disagree.
"""

from __future__ import annotations

MB = 2**20


def margin_bytes(disk_margin_mb: float) -> int:
    """The free space kept beyond what a save writes (`checkpoint.disk_margin_mb`)."""
    return int(disk_margin_mb * MB)


def save_needs(checkpoint_bytes: int, disk_margin_mb: float) -> int:
    """Free bytes a save of `checkpoint_bytes` needs before it starts."""
    return checkpoint_bytes + margin_bytes(disk_margin_mb)


def run_needs(checkpoint_bytes: int, keep_last: int, disk_margin_mb: float) -> int:
    """Peak disk a run's checkpoints take under the rotation policy: `keep_last` kept, the
    best one (which may be older than all of them), and the one being written."""
    return (keep_last + 2) * checkpoint_bytes + margin_bytes(disk_margin_mb)


def checkpoints_that_fit(free: int, checkpoint_bytes: int, disk_margin_mb: float) -> int:
    """How many more saves of this size the free space allows, by the same rule."""
    if checkpoint_bytes <= 0:
        return 0
    return max(free - margin_bytes(disk_margin_mb), 0) // checkpoint_bytes
