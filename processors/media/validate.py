"""Validation (Netflix VVS): every output is probed and checked against its recipe.

A non-empty violation list means the upload is rejected with VALIDATION_FAILED.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import ffmpeg

from .inspect import MediaInfo, _rate, displayed_size, probe, rotation_of
from .ladder import Recipe
from .rejection import Rejection, RejectionCode
from .thumbnails import ThumbnailSpec
from .tools import MediaTools

_PROFILES = {"main": {"Main"}, "high": {"High"}, "baseline": {"Baseline", "Constrained Baseline"}}


@dataclass(frozen=True)
class Violation:
    output: str         # rendition or thumbnail name
    check: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.output}: {self.check} expected {self.expected!r}, got {self.actual!r}"


@dataclass(frozen=True)
class Tolerance:
    duration_abs_s: float = 0.5
    duration_rel: float = 0.05
    bitrate_slack: float = 0.10      # allowed excess over what the VBV cap permits

    def duration_limit(self, expected_s: float) -> float:
        return max(self.duration_abs_s, self.duration_rel * expected_s)


def top_level_boxes(fileobj: BinaryIO, limit: int = 64) -> list[str]:
    """Types of the top-level MP4 boxes in file order (reads only the headers)."""
    types = []
    fileobj.seek(0, 2)
    end = fileobj.tell()
    offset = 0
    while offset + 8 <= end and len(types) < limit:
        fileobj.seek(offset)
        size, kind = struct.unpack(">I4s", fileobj.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", fileobj.read(8))[0]
            header = 16
        elif size == 0:
            size = end - offset
        types.append(kind.decode("latin-1"))
        if size < header:
            break
        offset += size
    return types


def moov_before_mdat(path: str | Path) -> bool:
    with open(path, "rb") as f:
        boxes = top_level_boxes(f)
    return "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")


def check_rendition(
    probe_json: dict[str, Any],
    recipe: Recipe,
    source: MediaInfo,
    tolerance: Tolerance = Tolerance(),
    faststart: bool | None = None,
) -> list[Violation]:
    """Pure: compare ffprobe JSON of one output with its recipe and the source."""
    name = recipe.name
    found: list[Violation] = []
    streams = probe_json.get("streams") or []
    fmt = probe_json.get("format") or {}
    videos = [s for s in streams if s.get("codec_type") == "video"]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if "mp4" not in str(fmt.get("format_name", "")).split(","):
        found.append(Violation(name, "container", "mp4", fmt.get("format_name")))
    if faststart is False:
        found.append(Violation(name, "faststart", "moov before mdat", "moov after mdat"))
    if len(videos) != 1:
        found.append(Violation(name, "video_streams", 1, len(videos)))
        return found
    video = videos[0]
    if video.get("codec_name") != recipe.codec:
        found.append(Violation(name, "video_codec", recipe.codec, video.get("codec_name")))
    size = displayed_size(int(video.get("width") or 0), int(video.get("height") or 0),
                          video.get("sample_aspect_ratio"), rotation_of(video))
    if size != (recipe.width, recipe.height):
        found.append(Violation(name, "dimensions", f"{recipe.width}x{recipe.height}", f"{size[0]}x{size[1]}"))
    if video.get("pix_fmt") != "yuv420p":
        found.append(Violation(name, "pix_fmt", "yuv420p", video.get("pix_fmt")))
    # 8-bit H.264 for SDR players: a BT.2020/HLG/PQ tag on it means wrong colours
    if video.get("color_transfer") in ("arib-std-b67", "smpte2084"):
        found.append(Violation(name, "color_transfer", "SDR (bt709)", video.get("color_transfer")))
    if video.get("color_primaries") == "bt2020":
        found.append(Violation(name, "color_primaries", "bt709", video.get("color_primaries")))
    if video.get("field_order") not in (None, "progressive", "unknown"):
        found.append(Violation(name, "field_order", "progressive", video.get("field_order")))
    expected_profiles = _PROFILES.get(recipe.profile)
    if expected_profiles and video.get("profile") not in expected_profiles:
        found.append(Violation(name, "profile", recipe.profile, video.get("profile")))
    fps = _rate(video.get("avg_frame_rate"))
    if fps is not None and fps > recipe.fps_cap + 0.5:
        found.append(Violation(name, "fps", f"<= {recipe.fps_cap:g}", round(fps, 3)))
    try:
        duration = float(fmt.get("duration"))
    except (TypeError, ValueError):
        duration = None
    if duration is None:
        found.append(Violation(name, "duration", round(source.duration_s, 3), None))
    elif abs(duration - source.duration_s) > tolerance.duration_limit(source.duration_s):
        found.append(Violation(name, "duration", round(source.duration_s, 3), round(duration, 3)))
    found += _check_bitrate(name, video, recipe, duration, tolerance)
    if recipe.audio_kbps:
        if len(audios) != 1:
            found.append(Violation(name, "audio_streams", 1, len(audios)))
        else:
            audio = audios[0]
            if audio.get("codec_name") != "aac":
                found.append(Violation(name, "audio_codec", "aac", audio.get("codec_name")))
            if recipe.audio_channels and int(audio.get("channels") or 0) != recipe.audio_channels:
                found.append(Violation(name, "audio_channels", recipe.audio_channels, audio.get("channels")))
    elif audios:
        found.append(Violation(name, "audio_streams", 0, len(audios)))
    return found


def _check_bitrate(name: str, video: dict[str, Any], recipe: Recipe, duration: float | None,
                   tolerance: Tolerance) -> list[Violation]:
    """With maxrate R and bufsize B the encoder may emit at most R*T + B bits in T seconds."""
    try:
        kbps = float(video.get("bit_rate")) / 1000
    except (TypeError, ValueError):
        return []
    if not duration or duration <= 0:
        return []
    allowed = (recipe.video_kbps * duration + recipe.bufsize_kbps) / duration * (1 + tolerance.bitrate_slack)
    if kbps > allowed:
        return [Violation(name, "video_kbps", f"<= {allowed:.0f}", round(kbps))]
    return []


def check_thumbnail(probe_json: dict[str, Any], spec: ThumbnailSpec) -> list[Violation]:
    streams = [s for s in probe_json.get("streams") or [] if s.get("codec_type") == "video"]
    if len(streams) != 1:
        return [Violation(spec.name, "image", "one jpeg picture", len(streams))]
    stream = streams[0]
    found = []
    if stream.get("codec_name") != "mjpeg":
        found.append(Violation(spec.name, "codec", "mjpeg", stream.get("codec_name")))
    size = (int(stream.get("width") or 0), int(stream.get("height") or 0))
    if size != (spec.width, spec.height):
        found.append(Violation(spec.name, "dimensions", f"{spec.width}x{spec.height}", f"{size[0]}x{size[1]}"))
    return found


def _probe_or_violation(path: Path, name: str, tools: MediaTools) -> dict[str, Any] | Violation:
    try:
        return probe(path, tools)
    except ffmpeg.Error as exc:
        detail = (exc.stderr or b"").decode("utf-8", errors="replace").strip().splitlines()[-1:]
        return Violation(name, "readable", True, " ".join(detail) or "ffprobe failed")


def validate_rendition(
    path: str | Path,
    recipe: Recipe,
    source: MediaInfo,
    *,
    tools: MediaTools | None = None,
    tolerance: Tolerance = Tolerance(),
) -> tuple[list[Violation], dict[str, Any] | None]:
    """Violations of one MP4 output plus its ffprobe JSON (None when it could not be read)."""
    path = Path(path)
    if not path.is_file():
        return [Violation(recipe.name, "exists", True, False)], None
    data = _probe_or_violation(path, recipe.name, tools or MediaTools())
    if isinstance(data, Violation):
        return [data], None
    return check_rendition(data, recipe, source, tolerance, faststart=moov_before_mdat(path)), data


def check_audio(probe_json: dict[str, Any], name: str, source: MediaInfo,
                tolerance: Tolerance = Tolerance()) -> list[Violation]:
    """An extra audio track output: exactly one AAC stream, no video, the source's duration."""
    streams = probe_json.get("streams") or []
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    found = []
    if len(audios) != 1 or len(streams) != 1:
        found.append(Violation(name, "streams", "one audio stream", [s.get("codec_type") for s in streams]))
    elif audios[0].get("codec_name") != "aac":
        found.append(Violation(name, "audio_codec", "aac", audios[0].get("codec_name")))
    try:
        duration = float((probe_json.get("format") or {}).get("duration"))
    except (TypeError, ValueError):
        duration = None
    if duration is None or abs(duration - source.duration_s) > tolerance.duration_limit(source.duration_s):
        found.append(Violation(name, "duration", round(source.duration_s, 3), duration))
    return found


def validate_audio(path: str | Path, name: str, source: MediaInfo, *, tools: MediaTools | None = None,
                   tolerance: Tolerance = Tolerance()) -> list[Violation]:
    path = Path(path)
    if not path.is_file():
        return [Violation(name, "exists", True, False)]
    data = _probe_or_violation(path, name, tools or MediaTools())
    return [data] if isinstance(data, Violation) else check_audio(data, name, source, tolerance)


def validate_thumbnail(path: str | Path, spec: ThumbnailSpec, *, tools: MediaTools | None = None) -> list[Violation]:
    path = Path(path)
    if not path.is_file():
        return [Violation(spec.name, "exists", True, False)]
    data = _probe_or_violation(path, spec.name, tools or MediaTools())
    return [data] if isinstance(data, Violation) else check_thumbnail(data, spec)


def validate_outputs(
    source: MediaInfo,
    renditions: Sequence[tuple[Recipe, str | Path]],
    thumbnails: Sequence[tuple[ThumbnailSpec, str | Path]] = (),
    *,
    tools: MediaTools | None = None,
    tolerance: Tolerance = Tolerance(),
) -> list[Violation]:
    found: list[Violation] = []
    for recipe, path in renditions:
        found += validate_rendition(path, recipe, source, tools=tools, tolerance=tolerance)[0]
    for spec, path in thumbnails:
        found += validate_thumbnail(path, spec, tools=tools)
    return found


def rejection_for(violations: Sequence[Violation]) -> Rejection | None:
    if not violations:
        return None
    return Rejection(RejectionCode.VALIDATION_FAILED,
                     f"{len(violations)} check(s) failed: " + "; ".join(str(v) for v in violations[:3]),
                     {"violations": [str(v) for v in violations]})


def check_media_playlist(text: str, recipe: Recipe, source: MediaInfo, segments_size: int | None,
                         tolerance: Tolerance = Tolerance()) -> list[Violation]:
    """Pure: a VOD byte-range playlist over `<rung>.m4s` that covers the source duration."""
    name = f"{recipe.name}.m3u8"
    found = []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != "#EXTM3U":
        return [Violation(name, "playlist", "#EXTM3U", lines[0] if lines else "")]
    if "#EXT-X-ENDLIST" not in lines:
        found.append(Violation(name, "endlist", True, False))
    total = sum(float(ln.split(":", 1)[1].split(",")[0]) for ln in lines if ln.startswith("#EXTINF:"))
    if abs(total - source.duration_s) > tolerance.duration_limit(source.duration_s):
        found.append(Violation(name, "duration", round(source.duration_s, 3), round(total, 3)))
    uris = {ln for ln in lines if not ln.startswith("#")}
    if uris != {f"{recipe.name}.m4s"}:
        found.append(Violation(name, "segment_uri", f"{recipe.name}.m4s", sorted(uris)))
    ends = []
    for ln in lines:
        if ln.startswith("#EXT-X-BYTERANGE:"):
            length, _, offset = ln.split(":", 1)[1].partition("@")
            ends.append(int(offset or 0) + int(length))
    if segments_size is not None and ends and max(ends) > segments_size:
        found.append(Violation(name, "byte_range", f"<= {segments_size}", max(ends)))
    return found
