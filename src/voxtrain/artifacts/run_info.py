"""`run.json`: who a run is (created, mode, inputs, versions) and one entry per session.

Both trainers (the acoustic model's and the vocoder's) record themselves here, so the file
has one format: `status`, the report and people read it the same way for either.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from voxtrain.artifacts.layout import RunDir
from voxtrain.atomic import write_json_atomic


def record_session(run: RunDir, mode: str, start_step: int, kind: str, versions: dict[str, str],
                   **facts: Any) -> None:
    """Add this session to run.json; `facts` (inputs, datasets) replace what an earlier session said."""
    info = json.loads(run.run_info.read_text(encoding="utf-8")) if run.run_info.is_file() else {}
    info.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    info.setdefault("mode", mode)
    info.update({k: v for k, v in facts.items() if v is not None})
    info["versions"] = versions
    info.setdefault("sessions", []).append({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "start_step": start_step,
        "kind": kind,
    })
    write_json_atomic(run.run_info, info)
