"""Thumbnails (Mail.Ru): two small previews at ~1/3 and ~2/3 of the duration and one poster at
player size (the largest rung's size), JPEG, aspect kept, never upscaled. One ffmpeg call."""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .encode import TONEMAP_FILTERS, source_filter_chain
from .inspect import MediaInfo
from .ladder import Recipe, top_recipe
from .tools import MediaTools, available_filters, run_tool

PREVIEW = "PREVIEW"
POSTER = "POSTER"
JPEG_QUALITY = 3  # mjpeg -q:v, 2 (best) .. 31


@dataclass(frozen=True)
class ThumbnailSpec:
    name: str           # file stem, e.g. "preview_1"
    kind: str           # PREVIEW | POSTER
    at_s: float
    width: int
    height: int

    @property
    def file_name(self) -> str:
        return f"{self.name}.jpg"


@dataclass(frozen=True)
class Thumbnail:
    spec: ThumbnailSpec
    path: Path
    size_bytes: int


def fit_box(src_w: int, src_h: int, box: int) -> tuple[int, int]:
    """Largest size with the source aspect whose long side is <= box; never larger than the source."""
    scale = min(1.0, box / max(src_w, src_h))
    return max(1, int(round(src_w * scale))), max(1, int(round(src_h * scale)))


def frame_time(info: MediaInfo, fraction: float) -> float:
    """A time that still has a frame after it (input seeking past the last frame yields nothing)."""
    last = info.duration_s - (1.5 / info.fps if info.fps else 0.05)
    return round(max(0.0, min(info.duration_s * fraction, last)), 3)


def plan_thumbnails(info: MediaInfo, recipes: Sequence[Recipe], preview_box: int = 320) -> list[ThumbnailSpec]:
    """Previews fit a preview_box square (320 wide for landscape, 320 tall for portrait)."""
    pw, ph = fit_box(info.width, info.height, preview_box)
    player = top_recipe(list(recipes))
    return [
        ThumbnailSpec("preview_1", PREVIEW, frame_time(info, 1 / 3), pw, ph),
        ThumbnailSpec("preview_2", PREVIEW, frame_time(info, 2 / 3), pw, ph),
        ThumbnailSpec("poster", POSTER, frame_time(info, 1 / 3), min(player.width, info.width),
                      min(player.height, info.height)),
    ]


def build_thumbnail_argv(
    source: str | Path,
    info: MediaInfo,
    outputs: Sequence[tuple[ThumbnailSpec, str | Path]],
    ffmpeg_exe: str = "ffmpeg",
) -> list[str]:
    """One input (seeked with -ss) per distinct time; a split when several outputs share a time."""
    times: list[float] = []
    for spec, _ in outputs:
        if spec.at_s not in times:
            times.append(spec.at_s)
    argv = [ffmpeg_exe, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y"]
    for t in times:
        argv += ["-ss", f"{t:.3f}", "-i", str(source)]
    graph = []
    for input_index, t in enumerate(times):
        users = [i for i, (spec, _) in enumerate(outputs) if spec.at_s == t]
        labels = "".join(f"[t{i}]" for i in users)
        prep = source_filter_chain(info, available_filters(ffmpeg_exe) if info.hdr else TONEMAP_FILTERS)
        graph.append(f"[{input_index}:{info.video_stream_index}]" + (prep + "," if prep else "")
                     + f"split={len(users)}{labels}")
    for i, (spec, _) in enumerate(outputs):
        graph.append(f"[t{i}]scale={spec.width}:{spec.height}:flags=bicubic,setsar=1,format=yuvj420p[o{i}]")
    argv += ["-filter_complex", ";".join(graph)]
    for i, (spec, path) in enumerate(outputs):
        argv += ["-map", f"[o{i}]", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", str(JPEG_QUALITY),
                 "-map_metadata", "-1", "-f", "image2", "-update", "1", str(path)]
    return argv


def make_thumbnails(
    source: str | Path,
    info: MediaInfo,
    specs: Sequence[ThumbnailSpec],
    out_dir: str | Path,
    *,
    tools: MediaTools | None = None,
    timeout_s: float = 120.0,
    cancel: threading.Event | None = None,
) -> list[Thumbnail]:
    tools = tools or MediaTools()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = {spec.name: out_dir / f"{spec.name}.jpg.part" for spec in specs}
    try:
        run_tool(build_thumbnail_argv(source, info, [(s, parts[s.name]) for s in specs], tools.ffmpeg),
                 timeout_s=timeout_s, cancel=cancel)
        missing = [s for s in specs if not parts[s.name].is_file() or parts[s.name].stat().st_size == 0]
        if missing:  # the seek landed after the last decodable frame: take the first frame instead
            retry = [(ThumbnailSpec(s.name, s.kind, 0.0, s.width, s.height), parts[s.name]) for s in missing]
            run_tool(build_thumbnail_argv(source, info, retry, tools.ffmpeg), timeout_s=timeout_s, cancel=cancel)
        result = []
        for spec in specs:
            final = out_dir / spec.file_name
            os.replace(parts[spec.name], final)
            result.append(Thumbnail(spec=spec, path=final, size_bytes=final.stat().st_size))
        return result
    finally:
        for part in parts.values():
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
