"""Where ffmpeg/ffprobe live and how they are run: no shell, a deadline, cancellation, progress.

`run_tool` is blocking; async callers run it in a thread (see `encode.EncoderPool`).

Every child runs in its own process group (a new session), and a timeout, a cancellation or a failing
progress callback kills the whole group. On Linux the child also gets PR_SET_PDEATHSIG=SIGKILL: when
the worker process dies (kill -9 included) the kernel kills its ffmpeg instead of leaving it to run
beside the restarted job. `processors.media.orphans` removes what such a child had written.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

ProgressCallback = Callable[[dict[str, str]], None]

_STDERR_TAIL_BYTES = 64 * 1024


class ToolMissing(RuntimeError):
    """The configured ffmpeg/ffprobe binary does not exist: an environment problem, not bad input."""


class ToolFailed(RuntimeError):
    def __init__(self, message: str, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


class ToolTimeout(ToolFailed):
    pass


class ToolCancelled(ToolFailed):
    pass


@dataclass(frozen=True)
class MediaTools:
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    # ffmpeg used for quality metrics; None = the imageio-ffmpeg static build if installed
    # (it has libvmaf), else `ffmpeg`.
    quality_ffmpeg: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "MediaTools":
        env = os.environ if environ is None else environ
        return cls(
            ffmpeg=env.get("VITRINA_FFMPEG", "ffmpeg"),
            ffprobe=env.get("VITRINA_FFPROBE", "ffprobe"),
            quality_ffmpeg=env.get("VITRINA_QUALITY_FFMPEG") or None,
        )

    def resolved_quality_ffmpeg(self) -> str:
        if self.quality_ffmpeg:
            return self.quality_ffmpeg
        return _imageio_ffmpeg() or self.ffmpeg


@lru_cache(maxsize=1)
def _imageio_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed or no binary for this platform
        return None


@lru_cache(maxsize=16)
def available_filters(ffmpeg: str) -> frozenset[str]:
    """Names of the filters compiled into this ffmpeg (parsed from `ffmpeg -filters`)."""
    exe = shutil.which(ffmpeg) or ffmpeg
    try:
        out = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL).stdout
    except FileNotFoundError as exc:
        raise ToolMissing(f"ffmpeg not found: {ffmpeg}") from exc
    names = set()
    for line in out.splitlines():
        parts = line.split()
        # rows look like " TS  psnr  VV->V  description"; flags are dots/letters only
        if len(parts) >= 3 and "->" in parts[2] and set(parts[0]) <= set("TSCA."):
            names.add(parts[1])
    return frozenset(names)


class ProgressParser:
    """Turns `-progress pipe:1` key=value lines into one dict per report."""

    def __init__(self) -> None:
        self._block: dict[str, str] = {}

    def feed(self, line: str) -> dict[str, str] | None:
        line = line.strip()
        if "=" not in line:
            return None
        key, value = line.split("=", 1)
        self._block[key.strip()] = value.strip()
        if key.strip() == "progress":
            block, self._block = self._block, {}
            return block
        return None


def out_time_s(block: dict[str, str]) -> float | None:
    """Media time reached, from a progress block (`out_time_us` is N/A before the first frame)."""
    raw = block.get("out_time_us") or block.get("out_time_ms")  # both are microseconds in ffmpeg
    try:
        return max(0.0, int(raw) / 1e6) if raw is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class ToolRun:
    argv: list[str]
    returncode: int
    stderr: str
    elapsed_s: float
    last_progress: dict[str, str] = field(default_factory=dict)


_PR_SET_PDEATHSIG = 1


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _child_setup() -> None:
    """In the child between fork and exec: die with the parent (SIGKILL)."""
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:        # the parent died before prctl: do not run as an orphan
            os._exit(1)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (the child leads it: start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def run_tool(
    argv: Sequence[str],
    *,
    timeout_s: float,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    check: bool = True,
    on_start: Callable[[int], None] | None = None,
) -> ToolRun:
    """Run ffmpeg/ffprobe without a shell. stdout is parsed as `-progress` output when present;
    stderr goes to a temporary file (so a chatty decoder can never block on a full pipe)."""
    argv = [str(a) for a in argv]
    started = time.monotonic()
    deadline = started + timeout_s
    with tempfile.TemporaryFile() as err_file:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err_file, text=True, errors="replace",
                                    start_new_session=True, preexec_fn=_child_setup)
        except FileNotFoundError as exc:
            raise ToolMissing(f"executable not found: {argv[0]}") from exc
        if on_start is not None:
            try:
                on_start(proc.pid)
            except BaseException:
                kill_group(proc)
                proc.wait()
                raise
        parser = ProgressParser()
        last: dict[str, str] = {}
        callback_errors: list[BaseException] = []

        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                block = parser.feed(line)
                if block is None:
                    continue
                last.clear()
                last.update(block)
                if on_progress is not None and not callback_errors:
                    try:
                        on_progress(block)
                    except BaseException as exc:  # re-raised in the caller's thread below
                        callback_errors.append(exc)

        reader = threading.Thread(target=read_stdout, name="ffmpeg-progress", daemon=True)
        reader.start()
        stop_reason = None
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if callback_errors:
                stop_reason = "callback"
            elif cancel is not None and cancel.is_set():
                stop_reason = "cancelled"
            elif time.monotonic() > deadline:
                stop_reason = "timeout"
            if stop_reason:
                kill_group(proc)
                proc.wait()
                break
        reader.join(timeout=5)
        err_file.seek(0, os.SEEK_END)
        size = err_file.tell()
        err_file.seek(max(0, size - _STDERR_TAIL_BYTES))
        stderr = err_file.read().decode("utf-8", errors="replace")
    elapsed = time.monotonic() - started
    if stop_reason == "timeout":
        raise ToolTimeout(f"{os.path.basename(argv[0])} timed out after {timeout_s:.0f} s", argv, None, stderr)
    if stop_reason == "cancelled":
        raise ToolCancelled(f"{os.path.basename(argv[0])} cancelled", argv, None, stderr)
    if callback_errors:
        raise callback_errors[0]
    if check and proc.returncode != 0:
        tail = stderr.strip().splitlines()[-3:]
        raise ToolFailed(f"{os.path.basename(argv[0])} exited with {proc.returncode}: {' | '.join(tail)}",
                         argv, proc.returncode, stderr)
    return ToolRun(argv=argv, returncode=proc.returncode, stderr=stderr, elapsed_s=elapsed,
                   last_progress=dict(last))
