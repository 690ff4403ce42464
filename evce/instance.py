"""The running instance of `bin/run` for a data directory: one at a time, and findable.

The launcher holds an exclusive lock on `<data>/run.lock` for its whole life and writes
`<data>/run.json` (its pid, children, port and Redis URL). A second start sees the lock
and says which instance runs; management commands started from another shell read the
Redis URL from the file instead of guessing the embedded port. The lock is released by
the kernel when the launcher dies, so a crash never leaves a stale "running" state.
No Django import: the settings module uses this.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

LOCK_FILE = "run.lock"
STATE_FILE = "run.json"


@dataclass(frozen=True)
class RunningInstance:
    pid: int
    started_at: str
    port: int
    redis_url: str
    children: dict[str, int] = field(default_factory=dict)

    @property
    def admin_url(self) -> str:
        return f"http://localhost:{self.port}/admin/"


def acquire(data_dir: Path) -> IO[str] | None:
    """Take the instance lock of `data_dir`; None when another launcher holds it.

    Keep the returned file open for as long as the instance runs.
    """
    handle = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def is_locked(data_dir: Path) -> bool:
    """Does a live launcher hold the lock of `data_dir`?"""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write_state(data_dir: Path, instance: RunningInstance) -> None:
    temporary = data_dir / (STATE_FILE + ".tmp")
    temporary.write_text(json.dumps(asdict(instance), indent=2))
    os.replace(temporary, data_dir / STATE_FILE)


def clear_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def read_running(data_dir: Path) -> RunningInstance | None:
    """The instance running from `data_dir`, or None (no state, or its launcher is gone)."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        instance = RunningInstance(pid=int(raw["pid"]), started_at=str(raw["started_at"]), port=int(raw["port"]),
                                   redis_url=str(raw["redis_url"]),
                                   children={str(k): int(v) for k, v in dict(raw.get("children", {})).items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return instance if is_locked(data_dir) else None
