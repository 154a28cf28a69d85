"""The broker-sensitive tests run again on Tansu: a child pytest in the background.

``tests/integration/test_tansu_path.py`` checks its result. The child mostly waits: on group joins
(Tansu completes one after half the session timeout), on workers and stacks starting. Run in
line, it was the suite's longest test, about 9 of its 60 minutes on a 2-core machine. When the
whole suite runs, the root conftest starts it at the first unit test, whose work is CPU-bound and
short, and moves the Tansu test to the end of the session, where it waits for the child's result.
A run that selects only the Tansu test starts the child from the test itself.

The child has its own stacks, ports and data under its own temporary directory. It inherits no
``VITRINA_*`` setting but ``VITRINA_BROKER=tansu``. It gets SIGTERM when this pytest dies. Its
conftest turns SIGTERM into a teardown, so its stacks stop too.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from infra.stack import parent_death_signal

ROOT = Path(__file__).resolve().parents[2]
TEST_ID = "tests/integration/test_tansu_path.py"
BROKER_SENSITIVE = [
    "tests/integration/test_stack.py",
    "tests/integration/test_produce_consume.py",
    "tests/integration/test_ops.py",
    # the two-phase rebuild (catalogue first, then the rest, under one replay group): Tansu still lists the
    # first phase's member when the second phase sets its offsets, so there they are committed by a member
    # of the group (streams/ops/group_offsets.py: reset_exited_group)
    "tests/integration/test_replay.py",
    "tests/integration/test_crash_safety.py",
]
TIMEOUT_S = 1800.0


@dataclass
class TansuRun:
    process: subprocess.Popen
    workdir: Path
    output: Path
    started: float

    def wait(self, timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
        """The child's exit code and its output, waited for at most ``timeout_s`` from its start (then it
        is stopped: a child that hangs fails the test instead of the CI run)."""
        try:
            code = self.process.wait(timeout=max(1.0, self.started + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(self)
            text = self.output.read_text(errors="replace")
            return self.process.returncode, f"{text}\n(stopped after {timeout_s:.0f} s)"
        return code, self.output.read_text(errors="replace")


_current: TansuRun | None = None


def start() -> TansuRun:
    """The background run, started once per session."""
    global _current
    if _current is None:
        workdir = Path(tempfile.mkdtemp(prefix="vitrina-tansu-"))
        env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINA_")}
        env["VITRINA_BROKER"] = "tansu"
        env["VITRINA_DATA_DIR"] = str(workdir / "unused")  # every module starts its own stack anyway
        output = workdir / "pytest.out"
        with output.open("w") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(workdir / "t"),
                 *BROKER_SENSITIVE],
                cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=parent_death_signal(signal.SIGTERM))
        _current = TansuRun(process, workdir, output, time.monotonic())
        atexit.register(stop, _current)
    return _current


def stop(run: TansuRun) -> None:
    """Stop the child if it still runs (SIGTERM, so that its stacks stop: then SIGKILL)."""
    if run.process.poll() is None:
        run.process.terminate()
        try:
            run.process.wait(60)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait(10)


def discard(run: TansuRun) -> None:
    """Remove the child's data once its result is in and it passed (a failure keeps it to look at)."""
    shutil.rmtree(run.workdir, ignore_errors=True)
