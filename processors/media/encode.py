"""Encoding (Netflix VES): recipe(s) -> ffmpeg argv (pure) and a runner (no shell, timeout, progress).

All rungs can be produced by ONE ffmpeg invocation: the source is decoded once, `split` feeds one
scale chain per rung and each chain goes to its own MP4 output. `build_encode_argv` returns that
exact argv so a benchmark can run the identical command directly.

Outputs are written to `<name>.mp4.part` and renamed only when ffmpeg succeeded; partial files are
always removed on failure, timeout or cancellation.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect as _pyinspect
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .inspect import MediaInfo
from .ladder import Recipe
from .tools import out_time_s, run_tool

FractionCallback = Callable[[float], None]
T = TypeVar("T")


@dataclass(frozen=True)
class EncodeSettings:
    ffmpeg: str = "ffmpeg"              # Debian ffmpeg has libx264
    preset: str = "veryfast"
    crf: int = 23
    keyframe_interval_s: float = 2.0    # aligned across rungs (ABR switching / HLS segments)
    threads: int = 0                    # 0 = let x264 decide
    scale_flags: str = "bicubic"
    # Also write each rung as HLS (fragmented MP4 in one <rung>.m4s + byte-range <rung>.m3u8) from the
    # SAME encode through the tee muxer: no extra encoding, twice the storage.
    hls: bool = False
    hls_segment_s: float = 6.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "EncodeSettings":
        env = os.environ if environ is None else environ
        return cls(
            ffmpeg=env.get("VITRINA_FFMPEG", "ffmpeg"),
            preset=env.get("VITRINA_ENCODE_PRESET", "veryfast"),
            crf=int(env.get("VITRINA_ENCODE_CRF", "23")),
            keyframe_interval_s=float(env.get("VITRINA_ENCODE_KEYFRAME_S", "2")),
            threads=int(env.get("VITRINA_ENCODE_THREADS", "0")),
            hls=env.get("VITRINA_ENCODE_HLS", "0") == "1",
        )


@dataclass(frozen=True)
class EncodedRendition:
    recipe: Recipe
    path: Path
    size_bytes: int
    hls_playlist: Path | None = None
    hls_segments: Path | None = None


@dataclass(frozen=True)
class EncodeResult:
    renditions: list[EncodedRendition]
    elapsed_s: float
    media_duration_s: float     # source duration encoded (x264's final out_time is unreliable on tiny clips)
    commands: list[list[str]] = field(default_factory=list)   # the exact argv(s) that ran

    @property
    def speed(self) -> float:
        """Media seconds encoded per wall second (all rungs together)."""
        return self.media_duration_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


# ---------------------------------------------------------------- argv (pure)

def video_filter_chain(info: MediaInfo, recipe: Recipe, scale_flags: str = "bicubic") -> str:
    # ffmpeg auto-rotates on decode, so the chain already sees the displayed orientation;
    # setsar=1 turns non-square source pixels into square output pixels.
    steps = []
    if info.fps and info.fps > recipe.fps_cap + 0.01:
        steps.append(f"fps={recipe.fps_cap:g}")
    # out_range=tv: full-range sources (phone/MPEG-4 clips flagged "pc") are converted to the
    # limited range every player expects; without it x264 writes a yuvj420p (full-range) stream
    steps += [f"scale={recipe.width}:{recipe.height}:flags={scale_flags}:out_range=tv", "setsar=1", "format=yuv420p"]
    return ",".join(steps)


def build_filter_complex(info: MediaInfo, recipes: Sequence[Recipe], scale_flags: str = "bicubic") -> str:
    n = len(recipes)
    parts = [f"[0:{info.video_stream_index}]split={n}" + "".join(f"[s{i}]" for i in range(n))]
    for i, recipe in enumerate(recipes):
        parts.append(f"[s{i}]{video_filter_chain(info, recipe, scale_flags)}[v{i}]")
    return ";".join(parts)


def output_args(info: MediaInfo, recipe: Recipe, index: int, settings: EncodeSettings) -> list[str]:
    args = ["-map", f"[v{index}]",
            "-c:v", "libx264", "-preset", settings.preset, "-profile:v", recipe.profile,
            "-crf", str(settings.crf), "-maxrate", f"{recipe.video_kbps}k", "-bufsize", f"{recipe.bufsize_kbps}k",
            "-force_key_frames", f"expr:gte(t,n_forced*{settings.keyframe_interval_s:g})"]
    if settings.threads:
        args += ["-threads", str(settings.threads)]
    if recipe.audio_kbps and info.audio_stream_index is not None:
        args += ["-map", f"0:{info.audio_stream_index}", "-c:a", "aac", "-b:a", f"{recipe.audio_kbps}k",
                 "-ac", str(recipe.audio_channels or 2)]
        if info.audio_sample_rate and info.audio_sample_rate > 48000:
            args += ["-ar", "48000"]
    # no source metadata (phone GPS tags etc.) leaks into public renditions
    args += ["-map_metadata", "-1", "-map_chapters", "-1"]
    return args


_TEE_SAFE = re.compile(r"^[A-Za-z0-9_./-]+$")


def muxer_args(path: str | Path, settings: EncodeSettings) -> list[str]:
    """Progressive MP4 (faststart); with settings.hls the same packets also go to an HLS muxer."""
    if not settings.hls:
        return ["-movflags", "+faststart", "-f", "mp4", str(path)]
    path = Path(path)
    if not _TEE_SAFE.match(str(path)):
        raise ValueError(f"HLS output needs a plain path (tee muxer syntax): {path}")
    stem = path.name.split(".")[0]
    playlist, segments = path.parent / f"{stem}.m3u8", path.parent / f"{stem}.m4s"
    hls = (f"[f=hls:hls_time={settings.hls_segment_s:g}:hls_playlist_type=vod:hls_segment_type=fmp4"
           f":hls_flags=single_file:hls_segment_filename={segments}]{playlist}")
    return ["-f", "tee", f"[f=mp4:movflags=+faststart]{path}|{hls}"]


def build_encode_argv(
    source: str | Path,
    info: MediaInfo,
    outputs: Sequence[tuple[Recipe, str | Path]],
    settings: EncodeSettings | None = None,
    *,
    progress: bool = True,
) -> list[str]:
    """One ffmpeg command: decode once, one output file per (recipe, path)."""
    if not outputs:
        raise ValueError("no outputs")
    settings = settings or EncodeSettings()
    argv = [settings.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y"]
    if progress:
        argv += ["-progress", "pipe:1"]
    argv += ["-i", str(source), "-filter_complex",
             build_filter_complex(info, [r for r, _ in outputs], settings.scale_flags)]
    for i, (recipe, path) in enumerate(outputs):
        argv += output_args(info, recipe, i, settings) + muxer_args(path, settings)
    return argv


def partial_path(out_dir: Path, recipe: Recipe) -> Path:
    return out_dir / f"{recipe.name}.mp4.part"


def final_path(out_dir: Path, recipe: Recipe) -> Path:
    return out_dir / f"{recipe.name}.mp4"


def hls_paths(out_dir: Path, recipe: Recipe) -> tuple[Path, Path]:
    return out_dir / f"{recipe.name}.m3u8", out_dir / f"{recipe.name}.m4s"


# ---------------------------------------------------------------- runner

def encode_renditions(
    source: str | Path,
    info: MediaInfo,
    recipes: Sequence[Recipe],
    out_dir: str | Path,
    settings: EncodeSettings | None = None,
    *,
    timeout_s: float = 3600.0,
    on_progress: FractionCallback | None = None,
    cancel: threading.Event | None = None,
    single_pass: bool = True,
) -> EncodeResult:
    """Encode every recipe into out_dir/<name>.mp4. single_pass=False runs one ffmpeg per recipe
    (for comparison; it decodes the source once per rung). Raises ToolFailed/ToolTimeout/ToolCancelled."""
    settings = settings or EncodeSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = [list(recipes)] if single_pass else [[r] for r in recipes]
    total = max(info.duration_s, 1e-3) * len(groups)
    done_media = 0.0
    started = time.monotonic()
    deadline = started + timeout_s
    partials = [partial_path(out_dir, r) for r in recipes]
    hls_files = [p for r in recipes for p in hls_paths(out_dir, r)] if settings.hls else []
    argvs: list[list[str]] = []
    succeeded = False
    try:
        for group in groups:
            argv = build_encode_argv(source, info, [(r, partial_path(out_dir, r)) for r in group], settings)
            argvs.append(argv)

            def report(block: dict[str, str], base: float = done_media) -> None:
                t = out_time_s(block)
                if on_progress is not None and t is not None:
                    on_progress(min(1.0, (base + t) / total))

            run_tool(argv, timeout_s=max(1.0, deadline - time.monotonic()),
                                    on_progress=report, cancel=cancel)
            done_media += info.duration_s
        renditions = []
        for recipe, part in zip(recipes, partials):
            final = final_path(out_dir, recipe)
            os.replace(part, final)
            playlist, segments = hls_paths(out_dir, recipe) if settings.hls else (None, None)
            renditions.append(EncodedRendition(recipe=recipe, path=final, size_bytes=final.stat().st_size,
                                               hls_playlist=playlist, hls_segments=segments))
        succeeded = True
    finally:
        leftovers = partials + ([] if succeeded else hls_files + [p.with_name(p.name + ".tmp") for p in hls_files])
        for part in leftovers:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
    if on_progress is not None:
        on_progress(1.0)
    return EncodeResult(renditions=renditions, elapsed_s=time.monotonic() - started,
                        media_duration_s=info.duration_s, commands=argvs)


# ---------------------------------------------------------------- concurrency

def default_concurrency() -> int:
    raw = os.environ.get("VITRINA_ENCODER_CONCURRENCY", "").strip()
    if raw:
        return max(1, int(raw))
    # x264 already uses every core; two encodes on a small box only add memory and latency
    return max(1, (os.cpu_count() or 2) // 2)


class EncoderPool:
    """Bounds how many blocking media jobs run at once for an asyncio caller (e.g. a Faust agent).

    `await pool.run(process_upload, path, workdir, ...)` waits for a slot, runs the function in a
    thread, passes it a `cancel` threading.Event (set when the awaiting task is cancelled, which
    kills ffmpeg) and, if an `on_progress` callable is given, calls it on the event loop thread.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size if size is not None else default_concurrency()
        if self.size < 1:
            raise ValueError("pool size must be >= 1")
        self._semaphore = asyncio.Semaphore(self.size)
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        async with self._semaphore:
            loop = asyncio.get_running_loop()
            cancel = threading.Event()
            if _accepts_cancel(fn) and "cancel" not in kwargs:
                kwargs["cancel"] = cancel
            callback = kwargs.get("on_progress")
            if callback is not None:
                kwargs["on_progress"] = _on_loop(loop, callback)
            self._active += 1
            job = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                cancel.set()
                with contextlib.suppress(BaseException):
                    await job       # hold the slot until ffmpeg is really gone
                raise
            finally:
                self._active -= 1


def _accepts_cancel(fn: Callable[..., Any]) -> bool:
    try:
        return "cancel" in _pyinspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any]) -> Callable[..., None]:
    def forward(*args: Any) -> None:
        loop.call_soon_threadsafe(callback, *args)
    if asyncio.iscoroutinefunction(callback):
        def forward_coroutine(*args: Any) -> None:
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(callback(*args)))
        return forward_coroutine
    return forward


__all__ = [
    "EncodeSettings", "EncodedRendition", "EncodeResult", "EncoderPool", "build_encode_argv",
    "build_filter_complex", "video_filter_chain", "output_args", "encode_renditions", "default_concurrency",
]
