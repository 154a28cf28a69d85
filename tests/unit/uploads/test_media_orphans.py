"""Issue 15: a killed worker's ffmpeg must not keep running beside the restarted job, nor leave `.part`
files. ffmpeg runs in its own process group (killed as a group on cancel/timeout) and dies with its
parent (PR_SET_PDEATHSIG); the restarted worker sweeps the orphaned work directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from support.media import FixtureMedia, media_fixture
from processors.media.orphans import OWNER_FILE, PID_FILE, claim, orphaned, sweep_orphans
from processors.media.tools import ToolCancelled, run_tool

media = pytest.fixture(scope="module")(media_fixture)
REPO = Path(__file__).resolve().parents[3]


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


WORKER = textwrap.dedent("""
    import sys
    from dataclasses import replace
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from processors.media import EncodeSettings, inspect, build_ladder
    from processors.media.encode import encode_renditions
    from processors.media.orphans import claim
    source, workdir = Path(sys.argv[1]), Path(sys.argv[2])
    claim(workdir)
    info = inspect(source)
    encode_renditions(source, info, build_ladder(info), workdir,
                      replace(EncodeSettings(), preset="veryslow", threads=1))
""")


def test_kill_9_of_the_worker_kills_its_ffmpeg_and_the_restart_sweeps_the_part_files(
        media: FixtureMedia, tmp_path: Path):
    root = tmp_path / "work"
    workdir = root / "asset-1234"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)))
    worker = subprocess.Popen([sys.executable, str(script), str(media["slow_encode.mp4"]), str(workdir)])
    try:
        pid_file = workdir / PID_FILE
        wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip(), 60, "ffmpeg to start")
        ffmpeg_pid = int(pid_file.read_text())
        wait_for(lambda: list(workdir.glob("*.mp4.part")), 30, "the .part files")
        assert running(ffmpeg_pid)
        assert os.getpgid(ffmpeg_pid) == ffmpeg_pid, "ffmpeg leads its own process group"
        assert os.getpgid(ffmpeg_pid) != os.getpgid(worker.pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        wait_for(lambda: not running(ffmpeg_pid), 5, "ffmpeg to die with its worker")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert list(workdir.glob("*.part")), "the crash left partial files (what the sweep is for)"
    assert orphaned(workdir)
    # the restarted worker, at start:
    swept = sweep_orphans(root)
    assert swept.removed_dirs == 1 and swept.removed_parts >= 1
    assert not workdir.exists()
    assert not list(root.rglob("*.part"))


def test_the_sweep_leaves_a_living_owners_directory_alone(tmp_path: Path):
    mine = claim(tmp_path / "work" / "running-job")
    (mine / "240p.mp4.part").write_bytes(b"x")
    unclaimed = tmp_path / "work" / "legacy"
    unclaimed.mkdir()
    assert (mine / OWNER_FILE).is_file()
    assert sweep_orphans(tmp_path / "work").removed_dirs == 0
    assert (mine / "240p.mp4.part").is_file() and unclaimed.is_dir()


def test_cancel_kills_the_whole_process_group(tmp_path: Path):
    """A tool that forks (as a shell or a wrapper would): cancelling the job kills its children too."""
    marker = tmp_path / "grandchild.pid"
    cancel = threading.Event()
    started: list[int] = []
    argv = ["/bin/sh", "-c", f"sleep 60 & echo $! > {marker}; wait"]
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    try:
        with pytest.raises(ToolCancelled):
            run_tool(argv, timeout_s=30, cancel=cancel, on_start=started.append)
    finally:
        timer.cancel()
    grandchild = int(marker.read_text())
    wait_for(lambda: not running(grandchild), 5, "the grandchild to be killed with its group")
    assert started and not running(started[0])
