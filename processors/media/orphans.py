"""Work directories owned by a process, and the cleanup of those whose owner died (kill -9, OOM, power).

A job claims its work directory (`claim`): an `.owner` file with the host, the pid and the pid's start
time (so a recycled pid is not taken for the owner). While ffmpeg runs, `encode_renditions` keeps the
pid of its process group in `.ffmpeg.pid`. At start a worker calls `sweep_orphans(root)`: every
directory whose owner is gone has its ffmpeg group killed (normally already dead through
PR_SET_PDEATHSIG, see `tools.run_tool`; the pid is only killed when its command line names that
directory) and is removed with its `.part` files.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

OWNER_FILE = ".owner"
PID_FILE = ".ffmpeg.pid"


def _start_time(pid: int) -> str | None:
    """Process start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    if pid <= 0:
        return False
    current = _start_time(pid)
    if current is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return start is None
    return start is None or current == start


def claim(workdir: str | Path) -> Path:
    """Create `workdir` and mark it as this process's."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    (workdir / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                                  "start": _start_time(pid)}))
    return workdir


@dataclass(frozen=True)
class Sweep:
    removed_dirs: int = 0
    killed_groups: int = 0
    removed_parts: int = 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_recorded_group(workdir: Path) -> bool:
    try:
        pid = int((workdir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return False
    if pid <= 1 or str(workdir) not in _cmdline(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        return True
    return False


def orphaned(workdir: Path) -> bool:
    """True when the directory's owner (on this host) no longer runs."""
    try:
        owner = json.loads((workdir / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False          # not claimed: not ours to judge (the age-based sweep handles it)
    if owner.get("host") != socket.gethostname():
        return False
    return not _alive(int(owner.get("pid") or 0), owner.get("start"))


def sweep_orphans(root: str | Path) -> Sweep:
    root = Path(root)
    if not root.is_dir():
        return Sweep()
    dirs = killed = parts = 0
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or not orphaned(entry):
            continue
        killed += _kill_recorded_group(entry)
        parts += sum(1 for _ in entry.rglob("*.part"))
        shutil.rmtree(entry, ignore_errors=True)
        dirs += 1
    return Sweep(removed_dirs=dirs, killed_groups=killed, removed_parts=parts)
