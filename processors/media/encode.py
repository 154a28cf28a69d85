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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .inspect import AudioTrack, MediaInfo
from .orphans import PID_FILE
from .ladder import Recipe, x264_tuning_args
from .tools import available_filters, out_time_s, run_tool

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
    # Per-title ladder (processors/media/complexity.py): "auto" = for titles of at least per_title_min_s
    # (the probe costs a few seconds; a short clip gains nothing from it), "1" always, "0" never
    per_title: str = "auto"
    per_title_min_s: float = 20.0
    per_title_target_vmaf: float = 90.0    # complexity.DEFAULT_TARGET_VMAF: the fixed CRF 23 on a typical clip
    # Per-title encoder choice (complexity.choose_encoder): the probe trial-encodes its samples with each
    # candidate x264 configuration (complexity.CANDIDATES; names, comma separated; "" = keep `preset`) and
    # picks the one with the fewest bits at the target VMAF whose predicted ladder encode time fits the
    # budget: per_title_budget_x x the title's duration, at least per_title_budget_min_s, at most
    # per_title_budget_max_s wall seconds (long or hard titles keep the fast default)
    per_title_candidates: str = "default"
    per_title_budget_x: float = 4.0
    per_title_budget_min_s: float = 30.0
    per_title_budget_max_s: float = 300.0
    per_title_min_gain: float = 0.03
    # Chunked parallel encoding (encode_chunked) for titles of at least chunked_min_s; 0 = never
    chunked_min_s: float = 600.0
    chunk_s: float = 30.0
    chunk_workers: int = 2

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
            per_title=env.get("VITRINA_PER_TITLE", "auto"),
            per_title_min_s=float(env.get("VITRINA_PER_TITLE_MIN_S", "20")),
            per_title_target_vmaf=float(env.get("VITRINA_PER_TITLE_VMAF", "90")),
            per_title_candidates=env.get("VITRINA_PER_TITLE_CANDIDATES", "default"),
            per_title_budget_x=float(env.get("VITRINA_PER_TITLE_BUDGET_X", "4")),
            per_title_budget_min_s=float(env.get("VITRINA_PER_TITLE_BUDGET_MIN_S", "30")),
            per_title_budget_max_s=float(env.get("VITRINA_PER_TITLE_BUDGET_MAX_S", "300")),
            per_title_min_gain=float(env.get("VITRINA_PER_TITLE_MIN_GAIN", "0.03")),
            chunked_min_s=float(env.get("VITRINA_CHUNKED_MIN_S", "600")),
            chunk_s=float(env.get("VITRINA_CHUNK_S", "30")),
            chunk_workers=int(env.get("VITRINA_CHUNK_WORKERS", "2")),
        )

    def wants_chunked(self, info: MediaInfo) -> bool:
        """Long titles without HLS or extra audio tracks (which the single pass writes in the same run)."""
        return (self.chunked_min_s > 0 and info.duration_s >= self.chunked_min_s and not self.hls
                and not info.extra_audio_tracks and info.duration_s >= 2 * self.chunk_s)

    def wants_per_title(self, duration_s: float) -> bool:
        return self.per_title == "1" or (self.per_title == "auto" and duration_s >= self.per_title_min_s)


@dataclass(frozen=True)
class EncodedRendition:
    recipe: Recipe
    path: Path
    size_bytes: int
    hls_playlist: Path | None = None
    hls_segments: Path | None = None


@dataclass(frozen=True)
class EncodedAudio:
    track: AudioTrack
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
    audio: list[EncodedAudio] = field(default_factory=list)   # extra audio tracks (HLS audio renditions)

    @property
    def speed(self) -> float:
        """Media seconds encoded per wall second (all rungs together)."""
        return self.media_duration_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


# ---------------------------------------------------------------- argv (pure)

def rung_rate(info: MediaInfo, recipe: Recipe) -> str | None:
    """The constant output rate of a rung: the source's real average rate (avg_frame_rate, exact fraction
    when known), capped by the rung. None when the source rate is unknown."""
    if not info.fps:
        return None
    if info.fps > recipe.fps_cap + 0.01:
        return f"{recipe.fps_cap:g}"
    return info.fps_rational or f"{info.fps:.6g}"


DEINTERLACE_PARITY = {"tff": 0, "bff": 1}
TONEMAP_FILTERS = {"zscale", "tonemap"}


def deinterlace_filter(info: MediaInfo) -> str | None:
    """bwdif, one frame per frame (25i -> 25p), field parity from idet."""
    if not info.interlaced:
        return None
    parity = DEINTERLACE_PARITY.get(info.field_order or "", -1)
    return f"bwdif=mode=send_frame:parity={parity}:deint=all"


def tonemap_filter(info: MediaInfo, filters: frozenset[str] | set[str] = frozenset(TONEMAP_FILTERS)) -> str | None:
    """HLG/PQ (BT.2100) -> SDR BT.709, 8-bit limited range. zscale+tonemap (hable) when this ffmpeg has
    them; otherwise only the matrix is converted (colours roughly right, highlights clipped)."""
    if not info.hdr:
        return None
    transfer = info.color_transfer or ("arib-std-b67" if info.hdr == "hlg" else "smpte2084")
    matrix = info.color_space if info.color_space in ("bt2020nc", "bt2020c") else "bt2020nc"
    primaries = info.color_primaries if info.color_primaries == "bt2020" else "bt2020"
    rng = "full" if info.color_range == "pc" else "limited"
    if TONEMAP_FILTERS <= set(filters):
        return (f"zscale=tin={transfer}:min={matrix}:pin={primaries}:rin={rng}:t=linear:npl=100,"
                "format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,"
                "zscale=t=bt709:m=bt709:r=limited,format=yuv420p")
    return "scale=in_color_matrix=bt2020:out_color_matrix=bt709:out_range=tv,format=yuv420p"


def source_filter_chain(info: MediaInfo, filters: frozenset[str] | set[str] = frozenset(TONEMAP_FILTERS)) -> str:
    """What every rung (and thumbnail) needs once, before the per-rung split: deinterlace, tone map."""
    return ",".join(f for f in (deinterlace_filter(info), tonemap_filter(info, filters)) if f)


def needs_bt709_tags(info: MediaInfo) -> bool:
    return bool(info.hdr) or info.color_primaries == "bt2020"


def video_filter_chain(info: MediaInfo, recipe: Recipe, scale_flags: str = "bicubic") -> str:
    # ffmpeg auto-rotates on decode, so the chain already sees the displayed orientation;
    # setsar=1 turns non-square source pixels into square output pixels.
    # A constant rate on EVERY rung: without an fps filter the MP4 muxer pads a VFR source to its
    # nominal rate (148 frames became 239); fps= resamples by time onto the real average rate.
    steps = []
    rate = rung_rate(info, recipe)
    if rate:
        steps.append(f"fps={rate}")
    # out_range=tv: full-range sources (phone/MPEG-4 clips flagged "pc") are converted to the
    # limited range every player expects; without it x264 writes a yuvj420p (full-range) stream
    steps += [f"scale={recipe.width}:{recipe.height}:flags={scale_flags}:out_range=tv", "setsar=1", "format=yuv420p"]
    return ",".join(steps)


def build_filter_complex(info: MediaInfo, recipes: Sequence[Recipe], scale_flags: str = "bicubic",
                         filters: frozenset[str] | set[str] = frozenset(TONEMAP_FILTERS)) -> str:
    n = len(recipes)
    prep = source_filter_chain(info, filters)
    parts = [f"[0:{info.video_stream_index}]" + (prep + "," if prep else "") + f"split={n}"
             + "".join(f"[s{i}]" for i in range(n))]
    for i, recipe in enumerate(recipes):
        parts.append(f"[s{i}]{video_filter_chain(info, recipe, scale_flags)}[v{i}]")
    return ";".join(parts)


def output_args(info: MediaInfo, recipe: Recipe, index: int, settings: EncodeSettings) -> list[str]:
    args = ["-map", f"[v{index}]",
            "-c:v", "libx264", "-preset", recipe.preset or settings.preset, "-profile:v", recipe.profile,
            "-crf", str(recipe.crf if recipe.crf is not None else settings.crf), "-maxrate", f"{recipe.video_kbps}k", "-bufsize", f"{recipe.bufsize_kbps}k",
            "-force_key_frames", f"expr:gte(t,n_forced*{settings.keyframe_interval_s:g})"]
    args += x264_tuning_args(recipe.tune, recipe.aq_mode)
    if settings.threads:
        args += ["-threads", str(settings.threads)]
    if recipe.audio_kbps and info.audio_stream_index is not None:
        args += ["-map", f"0:{info.audio_stream_index}", "-c:a", "aac", "-b:a", f"{recipe.audio_kbps}k",
                 "-ac", str(recipe.audio_channels or 2)]
        if info.audio_sample_rate and info.audio_sample_rate > 48000:
            args += ["-ar", "48000"]
    if needs_bt709_tags(info):
        args += ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]
    # no source metadata (phone GPS tags etc.) leaks into public renditions
    args += ["-map_metadata", "-1", "-map_chapters", "-1"]
    return args


AUDIO_TRACK_KBPS = 128


def audio_output_args(track: AudioTrack, kbps: int = AUDIO_TRACK_KBPS) -> list[str]:
    """An extra audio track of the source as its own AAC stereo output (an HLS audio rendition)."""
    args = ["-map", f"0:{track.index}", "-c:a", "aac", "-b:a", f"{kbps}k", "-ac", "2"]
    if track.sample_rate and track.sample_rate > 48000:
        args += ["-ar", "48000"]
    args += ["-map_metadata", "-1", "-map_chapters", "-1"]
    if track.language:
        args += ["-metadata:s:a:0", f"language={track.language}"]
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
    audio_outputs: Sequence[tuple[AudioTrack, str | Path]] = (),
) -> list[str]:
    """One ffmpeg command: decode once, one output file per (recipe, path), plus one audio-only output
    per extra audio track of the source."""
    if not outputs:
        raise ValueError("no outputs")
    settings = settings or EncodeSettings()
    filters = available_filters(settings.ffmpeg) if info.hdr else frozenset(TONEMAP_FILTERS)
    argv = [settings.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y"]
    if progress:
        argv += ["-progress", "pipe:1"]
    argv += ["-i", str(source), "-filter_complex",
             build_filter_complex(info, [r for r, _ in outputs], settings.scale_flags, filters)]
    for i, (recipe, path) in enumerate(outputs):
        argv += output_args(info, recipe, i, settings) + muxer_args(path, settings)
    for track, path in audio_outputs:
        argv += audio_output_args(track) + muxer_args(path, settings)
    return argv


def partial_path(out_dir: Path, recipe: Recipe) -> Path:
    return out_dir / f"{recipe.name}.mp4.part"


def final_path(out_dir: Path, recipe: Recipe) -> Path:
    return out_dir / f"{recipe.name}.mp4"


def hls_paths(out_dir: Path, recipe: Recipe | AudioTrack) -> tuple[Path, Path]:
    return out_dir / f"{recipe.name}.m3u8", out_dir / f"{recipe.name}.m4s"


def audio_partial_path(out_dir: Path, track: AudioTrack) -> Path:
    return out_dir / f"{track.name}.mp4.part"


def audio_final_path(out_dir: Path, track: AudioTrack) -> Path:
    return out_dir / f"{track.name}.mp4"




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
    extra_audio: bool = True,
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
    tracks = list(info.extra_audio_tracks) if extra_audio and any(r.audio_kbps for r in recipes) else []
    partials = [partial_path(out_dir, r) for r in recipes]
    audio_partials = [audio_partial_path(out_dir, t) for t in tracks]
    hls_files = [p for r in [*recipes, *tracks] for p in hls_paths(out_dir, r)] if settings.hls else []
    pid_file = out_dir / PID_FILE
    argvs: list[list[str]] = []
    succeeded = False
    try:
        for n, group in enumerate(groups):
            audio_outputs = list(zip(tracks, audio_partials)) if n == 0 else []
            argv = build_encode_argv(source, info, [(r, partial_path(out_dir, r)) for r in group], settings,
                                     audio_outputs=audio_outputs)
            argvs.append(argv)

            def report(block: dict[str, str], base: float = done_media) -> None:
                t = out_time_s(block)
                if on_progress is not None and t is not None:
                    on_progress(min(1.0, (base + t) / total))

            run_tool(argv, timeout_s=max(1.0, deadline - time.monotonic()), on_progress=report, cancel=cancel,
                     on_start=lambda pid: pid_file.write_text(f"{pid}\n"))
            done_media += info.duration_s
        renditions = []
        for recipe, part in zip(recipes, partials):
            final = final_path(out_dir, recipe)
            os.replace(part, final)
            playlist, segments = hls_paths(out_dir, recipe) if settings.hls else (None, None)
            renditions.append(EncodedRendition(recipe=recipe, path=final, size_bytes=final.stat().st_size,
                                               hls_playlist=playlist, hls_segments=segments))
        audio = []
        for track, part in zip(tracks, audio_partials):
            final = audio_final_path(out_dir, track)
            os.replace(part, final)
            playlist, segments = hls_paths(out_dir, track) if settings.hls else (None, None)
            audio.append(EncodedAudio(track=track, path=final, size_bytes=final.stat().st_size,
                                      hls_playlist=playlist, hls_segments=segments))
        succeeded = True
    finally:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        leftovers = partials + audio_partials + (
            [] if succeeded else hls_files + [p.with_name(p.name + ".tmp") for p in hls_files])
        for part in leftovers:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
    if on_progress is not None:
        on_progress(1.0)
    return EncodeResult(renditions=renditions, elapsed_s=time.monotonic() - started,
                        media_duration_s=info.duration_s, commands=argvs, audio=audio)


# ---------------------------------------------------------------- chunked (Netflix VES)

def chunk_windows(duration_s: float, chunk_s: float, keyframe_interval_s: float = 2.0) -> list[tuple[float, float]]:
    """(start, length) of each chunk; chunk length a whole number of keyframe intervals, so every chunk
    starts where the single-pass encode would have a forced keyframe anyway."""
    step = max(keyframe_interval_s, round(chunk_s / keyframe_interval_s) * keyframe_interval_s)
    windows, start = [], 0.0
    while start < duration_s - 1e-6:
        length = min(step, duration_s - start)
        windows.append((round(start, 6), round(length, 6)))
        start += step
    if len(windows) > 1 and windows[-1][1] < keyframe_interval_s / 2:     # a sliver: join it to the previous
        (s0, l0), (_, l1) = windows[-2], windows[-1]
        windows[-2:] = [(s0, round(l0 + l1, 6))]
    return windows


def build_chunk_argv(source: str | Path, info: MediaInfo, recipes: Sequence[Recipe], outputs: Sequence[Path],
                     window: tuple[float, float], settings: EncodeSettings, threads: int) -> list[str]:
    """Video only, one chunk of the title, every rung (one decode, split), plain MP4 per rung."""
    start, length = window
    filters = available_filters(settings.ffmpeg) if info.hdr else frozenset(TONEMAP_FILTERS)
    argv = [settings.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y", "-progress", "pipe:1",
            "-ss", f"{start:.6f}", "-t", f"{length:.6f}", "-i", str(source),
            "-filter_complex", build_filter_complex(info, recipes, settings.scale_flags, filters)]
    audio_less = replace(info, audio_stream_index=None)
    for i, (recipe, path) in enumerate(zip(recipes, outputs)):
        args = output_args(audio_less, recipe, i, replace(settings, threads=threads))
        argv += args + ["-f", "mp4", str(path)]
    return argv


def build_audio_argv(source: str | Path, info: MediaInfo, kbps: int, channels: int, path: Path,
                     settings: EncodeSettings) -> list[str]:
    argv = [settings.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y", "-i", str(source),
            "-map", f"0:{info.audio_stream_index}", "-vn", "-c:a", "aac", "-b:a", f"{kbps}k", "-ac", str(channels)]
    if info.audio_sample_rate and info.audio_sample_rate > 48000:
        argv += ["-ar", "48000"]
    return argv + ["-map_metadata", "-1", "-f", "mp4", str(path)]


def build_join_argv(list_file: Path, audio: Path | None, path: Path, settings: EncodeSettings) -> list[str]:
    argv = [settings.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y",
            "-f", "concat", "-safe", "0", "-i", str(list_file)]
    if audio is not None:
        argv += ["-i", str(audio), "-map", "0:v", "-map", "1:a"]
    return argv + ["-c", "copy", "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(path)]


def encode_chunked(
    source: str | Path,
    info: MediaInfo,
    recipes: Sequence[Recipe],
    out_dir: str | Path,
    settings: EncodeSettings | None = None,
    *,
    chunk_s: float = 10.0,
    workers: int = 2,
    timeout_s: float = 3600.0,
    on_progress: FractionCallback | None = None,
    cancel: threading.Event | None = None,
) -> EncodeResult:
    """The title cut into keyframe-aligned chunks encoded in parallel (`workers` ffmpeg at a time, each
    with cores/workers x264 threads), audio encoded once over the whole title (no priming gap at the
    seams), each rung joined with the concat demuxer (stream copy) into `<rung>.mp4`. Same recipes and
    outputs as `encode_renditions` (progressive MP4; no HLS, no extra audio tracks: those titles use the
    single pass). Raises ToolFailed/ToolTimeout/ToolCancelled; temporary files are always removed."""
    from concurrent.futures import ThreadPoolExecutor
    settings = settings or EncodeSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    windows = chunk_windows(info.duration_s, chunk_s, settings.keyframe_interval_s)
    started = time.monotonic()
    deadline = started + timeout_s
    temp = out_dir / ".chunks"
    temp.mkdir(exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // max(1, workers))
    done = [0.0] * len(windows)
    lock = threading.Lock()
    argvs: list[list[str]] = []
    partials = [partial_path(out_dir, r) for r in recipes]
    stop = cancel or threading.Event()

    def run_chunk(n: int) -> None:
        outputs = [temp / f"{r.name}.{n:05d}.mp4" for r in recipes]
        argv = build_chunk_argv(source, info, recipes, outputs, windows[n], settings, threads)
        with lock:
            argvs.append(argv)

        def report(block: dict[str, str]) -> None:
            t = out_time_s(block)
            if t is None or on_progress is None:
                return
            with lock:
                done[n] = min(t, windows[n][1])
                fraction = sum(done) / max(info.duration_s, 1e-3)
            on_progress(min(0.95, fraction * 0.95))
        run_tool(argv, timeout_s=max(1.0, deadline - time.monotonic()), on_progress=report, cancel=stop)

    succeeded = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="chunk") as executor:
            futures = [executor.submit(run_chunk, n) for n in range(len(windows))]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                stop.set()                 # kill the other chunks' ffmpeg now
                raise
        audio_files: dict[tuple[int, int], Path] = {}
        if info.audio_stream_index is not None:
            for recipe in recipes:
                if recipe.audio_kbps:
                    key = (recipe.audio_kbps, recipe.audio_channels or 2)
                    if key not in audio_files:
                        path = temp / f"audio-{key[0]}-{key[1]}.m4a"
                        argv = build_audio_argv(source, info, key[0], key[1], path, settings)
                        argvs.append(argv)
                        run_tool(argv, timeout_s=max(1.0, deadline - time.monotonic()), cancel=stop)
                        audio_files[key] = path
        renditions = []
        for recipe, part in zip(recipes, partials):
            list_file = temp / f"{recipe.name}.txt"
            list_file.write_text("".join(f"file '{temp / f'{recipe.name}.{n:05d}.mp4'}'\n"
                                         for n in range(len(windows))))
            audio = audio_files.get((recipe.audio_kbps, recipe.audio_channels or 2)) if recipe.audio_kbps else None
            argv = build_join_argv(list_file, audio, part, settings)
            argvs.append(argv)
            run_tool(argv, timeout_s=max(1.0, deadline - time.monotonic()), cancel=stop)
        for recipe, part in zip(recipes, partials):
            final = final_path(out_dir, recipe)
            os.replace(part, final)
            renditions.append(EncodedRendition(recipe=recipe, path=final, size_bytes=final.stat().st_size))
        succeeded = True
    finally:
        import shutil
        shutil.rmtree(temp, ignore_errors=True)
        if not succeeded:
            for part in partials:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
    if on_progress is not None:
        on_progress(1.0)
    return EncodeResult(renditions=renditions, elapsed_s=time.monotonic() - started,
                        media_duration_s=info.duration_s, commands=argvs)


# ---------------------------------------------------------------- concurrency

def default_concurrency(configured: str = "") -> int:
    """Parallel encodes: ``configured`` (``Settings.encoder_concurrency``, VITRINA_ENCODER_CONCURRENCY) when set
    (at least 1), else half the cores."""
    raw = configured.strip()
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
