"""Inspection (Netflix VIS / Mail.Ru probe): metadata of an original, or a machine-readable Rejection.

Split into a pure core (`describe`, `check_limits`, `judge_decode`) working on ffprobe JSON and
decode-scan results, and an I/O shell (`probe`, `decode_scan`, `inspect`).

Decode check: ffprobe alone trusts the container index, so a truncated or damaged file can look
fine. `inspect` therefore decodes the video (and first audio) stream into the null muxer and
compares what was decoded with what the container announces:
* decodable frames / announced frames (nb_frames, else the demuxed packet count) >= min_decodable_ratio
* media time reached / declared duration >= min_decodable_ratio
A file that conceals a few bad packets (decord__corrupted.mp4: 49 of 50 frames) is accepted with
its decoder errors recorded in `MediaInfo.decode_errors`; a truncated one (half the frames) is CORRUPT.
Files longer than `decode_check_full_s` get only a head and a tail slice decoded.
A container without a duration (moviepy__no_duration.webm) gets it from the decode.
"""
from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from .limits import Limits
from .rejection import Rejection, RejectionCode
from .sniff import image_format, media_container, read_head
from .tools import MediaTools, ToolMissing, ToolTimeout, out_time_s, run_tool

# Demuxers that read a single still image (ffprobe happily calls a PNG a one-frame "video").
_IMAGE_DEMUXERS = {"image2", "image2pipe", "apng"}
# Codecs of still images; a container holding one such frame is an image, not a video.
_IMAGE_CODECS = {"png", "mjpeg", "jpeg2000", "bmp", "webp", "tiff", "gif", "apng", "jpegls",
                 "ljpeg", "pam", "pbm", "pgm", "ppm", "qoi", "jpegxl", "sgi", "targa", "dpx", "exr"}
_MAX_ERROR_LINES = 20
MAX_EXTRA_AUDIO_TRACKS = 8


@dataclass(frozen=True)
class StreamFacts:
    """What ffprobe says about the chosen streams, before any decoding."""
    format_name: str
    video_stream_index: int
    codec: str
    pix_fmt: str | None
    coded_width: int
    coded_height: int
    width: int               # displayed (rotation and sample aspect ratio applied)
    height: int
    rotation: int            # 0, 90, 180 or 270
    fps: float
    declared_frames: int | None
    declared_duration_s: float | None
    bitrate_kbps: int | None
    audio_stream_index: int | None
    audio_codec: str | None
    audio_channels: int | None
    audio_sample_rate: int | None
    fps_rational: str | None = None       # avg_frame_rate as ffprobe wrote it ("30000/1001", "225/11")
    nominal_fps: float | None = None      # r_frame_rate: differs from the average for VFR files
    field_order: str | None = None        # container/codec flag only: "progressive", "tt", "bb", ...
    color_transfer: str | None = None
    color_primaries: str | None = None
    color_space: str | None = None
    color_range: str | None = None
    audio_tracks: tuple["AudioTrack", ...] = ()

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream of the original (the chosen one and the extra ones kept as HLS audio renditions)."""
    index: int                      # absolute stream index in the file
    codec: str | None
    channels: int | None
    sample_rate: int | None
    language: str | None
    default: bool
    title: str | None = None

    @property
    def name(self) -> str:
        """Object-safe rendition name: audio-<stream index>."""
        return f"audio-{self.index}"


@dataclass(frozen=True)
class InterlaceScan:
    """idet counts over the first frames (multi-frame detection)."""
    tff: int
    bff: int
    progressive: int
    undetermined: int

    @property
    def total(self) -> int:
        return self.tff + self.bff + self.progressive + self.undetermined


@dataclass(frozen=True)
class DecodeScan:
    start_s: float
    frames: int
    end_s: float                    # media time reached, from the start of the file
    returncode: int
    error_lines: tuple[str, ...] = ()
    error_count: int = 0
    complete: bool = True           # False when capped by -t before the end of the file


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration_s: float
    width: int                      # displayed
    height: int                     # displayed
    coded_width: int
    coded_height: int
    rotation: int
    codec: str
    pix_fmt: str | None
    fps: float
    frame_count: int                # estimate: container count, decoded count or duration * fps
    has_audio: bool
    audio_codec: str | None
    audio_channels: int | None
    audio_sample_rate: int | None
    bitrate_kbps: int | None
    size_bytes: int
    video_stream_index: int
    audio_stream_index: int | None
    duration_source: str            # "container" or "decoded"
    decode_errors: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    fps_rational: str | None = None  # the real average rate as a fraction (avg_frame_rate), for fps filters
    vfr: bool = False                # nominal rate differs from the real average
    interlaced: bool = False         # detected by idet, not taken from the field_order flag
    field_order: str | None = None   # "tff" / "bff" when interlaced
    hdr: str | None = None           # "hlg" / "pq" (BT.2100 transfer), None for SDR
    color_transfer: str | None = None
    color_primaries: str | None = None
    color_space: str | None = None
    color_range: str | None = None
    audio_tracks: tuple[AudioTrack, ...] = ()   # every audio stream; audio_stream_index is the chosen one

    @property
    def extra_audio_tracks(self) -> tuple[AudioTrack, ...]:
        """The other audio tracks kept as audio renditions (decodable-looking ones, at most 8)."""
        return tuple(t for t in self.audio_tracks
                     if t.index != self.audio_stream_index and t.codec and t.channels)[:MAX_EXTRA_AUDIO_TRACKS]

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def is_portrait(self) -> bool:
        return self.height > self.width

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- pure core

def _num(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and result not in (float("inf"), float("-inf")) else None


def _rate(text: str | None) -> float | None:
    if not text or "/" not in text:
        return _num(text)
    num, den = text.split("/", 1)
    try:
        if int(den) == 0 or int(num) <= 0:
            return None
        return float(Fraction(int(num), int(den)))
    except ValueError:
        return None


def rotation_of(stream: dict[str, Any]) -> int:
    """Rotation in degrees normalised to 0/90/180/270, from the display matrix or the old tag."""
    raw = None
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            raw = side["rotation"]
            break
    if raw is None:
        raw = (stream.get("tags") or {}).get("rotate")
    value = _num(raw)
    if value is None:
        return 0
    return int(round(value / 90.0)) * 90 % 360


def displayed_size(coded_w: int, coded_h: int, sar: str | None, rotation: int) -> tuple[int, int]:
    ratio = _rate(sar.replace(":", "/")) if sar else None
    width, height = coded_w, coded_h
    if ratio and ratio > 0 and abs(ratio - 1.0) > 1e-6:
        width = max(1, int(round(coded_w * ratio)))
    if rotation in (90, 270):
        width, height = height, width
    return width, height


def _is_cover_art(stream: dict[str, Any]) -> bool:
    disposition = stream.get("disposition") or {}
    return bool(disposition.get("attached_pic") or disposition.get("timed_thumbnails"))


def describe(probe_json: dict[str, Any]) -> StreamFacts | Rejection:
    """Pick the video/audio streams from ffprobe JSON and reject what is not a video at all."""
    fmt = probe_json.get("format") or {}
    format_name = str(fmt.get("format_name") or "")
    streams = probe_json.get("streams") or []
    if format_name in _IMAGE_DEMUXERS or format_name.endswith("_pipe"):
        return Rejection(RejectionCode.NOT_A_VIDEO, f"a still image ({format_name}), not a video",
                         {"format_name": format_name})
    videos = [s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        kinds = sorted({str(s.get("codec_type")) for s in streams})
        return Rejection(RejectionCode.NO_VIDEO_STREAM,
                         "no video track" + (" (audio only)" if audios else ""),
                         {"format_name": format_name, "stream_types": kinds})
    video = videos[0]
    coded_w, coded_h = int(video.get("width") or 0), int(video.get("height") or 0)
    if coded_w <= 0 or coded_h <= 0:
        return Rejection(RejectionCode.CORRUPT, "video stream without dimensions",
                         {"format_name": format_name, "codec": video.get("codec_name")})
    rotation = rotation_of(video)
    width, height = displayed_size(coded_w, coded_h, video.get("sample_aspect_ratio"), rotation)
    fps = _rate(video.get("avg_frame_rate"))
    if fps is None or fps > 1000:
        fps = _rate(video.get("r_frame_rate"))
    if fps is not None and fps > 1000:
        fps = None
    nb_frames = video.get("nb_frames")
    declared_frames = int(nb_frames) if str(nb_frames or "").isdigit() else None
    duration = _num(fmt.get("duration"))
    if duration is None:
        duration = _num(video.get("duration"))
    bit_rate = _num(fmt.get("bit_rate"))
    tracks = tuple(audio_track(a) for a in audios)
    audio = choose_audio(audios)
    nominal = _rate(video.get("r_frame_rate"))
    avg_text = video.get("avg_frame_rate") if _rate(video.get("avg_frame_rate")) == fps else None
    return StreamFacts(
        format_name=format_name,
        video_stream_index=int(video.get("index", 0)),
        codec=str(video.get("codec_name") or "unknown"),
        pix_fmt=video.get("pix_fmt"),
        coded_width=coded_w, coded_height=coded_h, width=width, height=height, rotation=rotation,
        fps=fps or 0.0,
        declared_frames=declared_frames,
        declared_duration_s=duration,
        bitrate_kbps=int(bit_rate // 1000) if bit_rate else None,
        audio_stream_index=int(audio.get("index")) if audio else None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        audio_sample_rate=int(audio["sample_rate"]) if audio and str(audio.get("sample_rate", "")).isdigit() else None,
        fps_rational=avg_text if avg_text and "/" in str(avg_text) else None,
        nominal_fps=nominal if nominal is not None and nominal <= 1000 else None,
        field_order=video.get("field_order"),
        color_transfer=video.get("color_transfer"), color_primaries=video.get("color_primaries"),
        color_space=video.get("color_space"), color_range=video.get("color_range"),
        audio_tracks=tracks,
    )


def audio_track(stream: dict[str, Any]) -> AudioTrack:
    tags = stream.get("tags") or {}
    language = tags.get("language") or tags.get("LANGUAGE")
    return AudioTrack(
        index=int(stream.get("index", 0)), codec=stream.get("codec_name"),
        channels=int(stream["channels"]) if stream.get("channels") else None,
        sample_rate=int(stream["sample_rate"]) if str(stream.get("sample_rate", "")).isdigit() else None,
        language=language if language and language != "und" else None,
        default=bool((stream.get("disposition") or {}).get("default")),
        title=tags.get("title"))


def choose_audio(audios: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The track a player would play: the one flagged default (the first of them), else the first one."""
    if not audios:
        return None
    flagged = [a for a in audios if (a.get("disposition") or {}).get("default")]
    # several "default" flags (ffmpeg marks the first track of a type default when remuxing): if only
    # some are flagged, the flag means something; if all are, it is the first
    return flagged[0] if flagged and len(flagged) < len(audios) else audios[0]


HDR_TRANSFERS = {"arib-std-b67": "hlg", "smpte2084": "pq"}


def hdr_kind(color_transfer: str | None) -> str | None:
    return HDR_TRANSFERS.get(color_transfer or "")


def judge_interlace(scan: InterlaceScan | None) -> str | None:
    """'tff' / 'bff' when idet saw combing in most decided frames, else None (progressive).

    Multi-frame counts; frames idet cannot decide are ignored. A container flag alone decides nothing
    (phones and editors write 'tt' on progressive video, capture cards write 'progressive' on 1080i)."""
    if scan is None:
        return None
    interlaced = scan.tff + scan.bff
    decided = interlaced + scan.progressive
    if decided < 4 or interlaced < 0.6 * decided:
        return None
    return "tff" if scan.tff >= scan.bff else "bff"


def check_limits(facts: StreamFacts, limits: Limits) -> Rejection | None:
    """Limits that need no decoding; also the still-image and frame-count checks the container answers."""
    if facts.pixels > limits.max_pixels:
        return Rejection(RejectionCode.TOO_MANY_PIXELS,
                         f"{facts.width}x{facts.height} exceeds {limits.max_pixels} pixels",
                         {"width": facts.width, "height": facts.height, "max_pixels": limits.max_pixels})
    if facts.declared_frames is not None and facts.declared_frames < limits.min_frames:
        return _few_frames(facts, facts.declared_frames, limits)
    if facts.declared_duration_s is not None and facts.declared_duration_s > limits.max_duration_s:
        return _too_long(facts.declared_duration_s, limits)
    return None


def _few_frames(facts: StreamFacts, frames: int, limits: Limits) -> Rejection:
    if facts.codec in _IMAGE_CODECS:
        return Rejection(RejectionCode.NOT_A_VIDEO, f"a single {facts.codec} picture, not a video",
                         {"codec": facts.codec, "frames": frames})
    return Rejection(RejectionCode.TOO_FEW_FRAMES,
                     f"{frames} frame(s); at least {limits.min_frames} are required",
                     {"frames": frames, "min_frames": limits.min_frames})


def _too_long(duration: float, limits: Limits) -> Rejection:
    return Rejection(RejectionCode.TOO_LONG, f"{duration:.1f} s exceeds {limits.max_duration_s:.0f} s",
                     {"duration_s": duration, "max_duration_s": limits.max_duration_s})


def judge_decode(
    facts: StreamFacts,
    scans: list[DecodeScan],
    size_bytes: int,
    limits: Limits,
    expected_frames: int | None = None,
    interlace: InterlaceScan | None = None,
) -> MediaInfo | Rejection:
    """Turn probe facts + decode scans (one full scan, or a head and a tail slice) into a verdict."""
    errors = sum(s.error_count for s in scans)
    error_lines = tuple(line for s in scans for line in s.error_lines)[:5]
    failed = [s for s in scans if s.returncode != 0]
    if failed:
        return Rejection(RejectionCode.CORRUPT, "ffmpeg could not decode the video: "
                         + (" | ".join(failed[0].error_lines[-2:]) or f"exit {failed[0].returncode}"),
                         {"decode_errors": errors, "error_lines": list(error_lines)})
    if not scans or all(s.frames == 0 for s in scans):
        return Rejection(RejectionCode.CORRUPT, "no decodable video frame",
                         {"decode_errors": errors, "error_lines": list(error_lines)})
    full = len(scans) == 1 and scans[0].start_s == 0
    scan = scans[0]
    declared = facts.declared_duration_s
    expected = facts.declared_frames if facts.declared_frames is not None else expected_frames
    ratio = limits.min_decodable_ratio
    frame_slack = 2.0 / facts.fps if facts.fps else 0.1
    if full and scan.complete:
        if expected and scan.frames < ratio * expected:
            return Rejection(RejectionCode.CORRUPT,
                             f"only {scan.frames} of {expected} frames decodable (truncated or damaged)",
                             {"decoded_frames": scan.frames, "expected_frames": expected,
                              "decode_errors": errors, "error_lines": list(error_lines)})
        if declared and scan.end_s + frame_slack < ratio * declared:
            return Rejection(RejectionCode.CORRUPT,
                             f"decoding stops at {scan.end_s:.2f} s of {declared:.2f} s (truncated)",
                             {"decoded_s": scan.end_s, "declared_s": declared, "decode_errors": errors})
    elif not full:
        tail = scans[-1]
        if declared and (tail.frames == 0 or tail.end_s + frame_slack < ratio * declared):
            return Rejection(RejectionCode.CORRUPT,
                             f"the end of the file does not decode (reached {tail.end_s:.2f} s of {declared:.2f} s)",
                             {"decoded_s": tail.end_s, "declared_s": declared, "decode_errors": errors})
    if full and scan.complete and scan.frames < limits.min_frames:
        return _few_frames(facts, scan.frames, limits)
    duration_source = "container"
    duration = declared
    if duration is None:
        duration, duration_source = scan.end_s, "decoded"
        if not scan.complete or duration > limits.max_duration_s:
            return _too_long(duration, limits)
    if duration <= 0:
        return Rejection(RejectionCode.ZERO_DURATION, "the video has no duration",
                         {"duration_s": duration, "frames": scan.frames})
    fps = facts.fps or (scan.frames / duration if full else 0.0)
    if facts.declared_frames is not None:
        frame_count = facts.declared_frames
    elif full and scan.complete:
        frame_count = scan.frames
    else:
        frame_count = int(round(duration * fps))
    bitrate = facts.bitrate_kbps or int(size_bytes * 8 / duration / 1000)
    warnings = []
    if errors:
        warnings.append(f"{errors} decoder message(s): " + " | ".join(error_lines[:2]))
    if expected and full and scan.complete and scan.frames < expected:
        warnings.append(f"{expected - scan.frames} of {expected} frames not decodable")
    order = judge_interlace(interlace)
    fps_rational = facts.fps_rational if facts.fps and abs(float(fps) - facts.fps) < 1e-9 else None
    vfr = bool(facts.nominal_fps and fps and abs(facts.nominal_fps - fps) > 0.01 * fps)
    return MediaInfo(
        format_name=facts.format_name, duration_s=float(duration), width=facts.width, height=facts.height,
        coded_width=facts.coded_width, coded_height=facts.coded_height, rotation=facts.rotation,
        codec=facts.codec, pix_fmt=facts.pix_fmt, fps=float(fps), frame_count=int(frame_count),
        has_audio=facts.audio_stream_index is not None, audio_codec=facts.audio_codec,
        audio_channels=facts.audio_channels, audio_sample_rate=facts.audio_sample_rate,
        bitrate_kbps=bitrate, size_bytes=size_bytes, video_stream_index=facts.video_stream_index,
        audio_stream_index=facts.audio_stream_index, duration_source=duration_source,
        decode_errors=errors, warnings=tuple(warnings),
        fps_rational=fps_rational, vfr=vfr, interlaced=order is not None, field_order=order,
        hdr=hdr_kind(facts.color_transfer), color_transfer=facts.color_transfer,
        color_primaries=facts.color_primaries, color_space=facts.color_space, color_range=facts.color_range,
        audio_tracks=facts.audio_tracks,
    )


def unreadable(head: bytes, probe_error: str) -> Rejection:
    """ffprobe could not open the file: damaged media if the bytes announce a container, else not media."""
    detail = probe_error.strip().splitlines()[-1] if probe_error.strip() else "unreadable"
    image = image_format(head)
    if image:
        return Rejection(RejectionCode.NOT_A_VIDEO, f"a {image} image, not a video", {"sniffed": image})
    container = media_container(head)
    if container:
        return Rejection(RejectionCode.CORRUPT, f"damaged {container} file: {detail}",
                         {"sniffed": container, "probe_error": detail})
    return Rejection(RejectionCode.NOT_A_VIDEO, f"not a media file: {detail}", {"probe_error": detail})


# ---------------------------------------------------------------- I/O shell

def probe(path: str | Path, tools: MediaTools | None = None, **extra: Any) -> dict[str, Any]:
    """ffprobe JSON (format + streams) via ffmpeg-python; raises ffmpeg.Error."""
    tools = tools or MediaTools()
    return ffmpeg.probe(str(path), cmd=tools.ffprobe, v="error", **extra)


def count_packets(path: str | Path, stream_index: int, tools: MediaTools | None = None) -> int | None:
    """Demux-only count of a stream's packets (cheap): the frame count when the container has none."""
    try:
        data = probe(path, tools, count_packets=None, select_streams=str(stream_index))
    except ffmpeg.Error:
        return None
    for stream in data.get("streams") or []:
        raw = str(stream.get("nb_read_packets") or "")
        if raw.isdigit():
            return int(raw)
    return None


def build_decode_scan_argv(
    path: str | Path,
    video_index: int,
    audio_index: int | None,
    ffmpeg_exe: str = "ffmpeg",
    start_s: float = 0.0,
    max_s: float | None = None,
) -> list[str]:
    argv = [ffmpeg_exe, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-progress", "pipe:1"]
    if start_s > 0:
        argv += ["-ss", f"{start_s:.3f}"]
    argv += ["-i", str(path)]
    if max_s is not None:
        argv += ["-t", f"{max_s:.3f}"]
    argv += ["-map", f"0:{video_index}"]
    if audio_index is not None:
        argv += ["-map", f"0:{audio_index}"]
    argv += ["-fps_mode", "passthrough", "-f", "null", "-"]
    return argv


def decode_scan(
    path: str | Path,
    video_index: int,
    audio_index: int | None,
    *,
    tools: MediaTools | None = None,
    start_s: float = 0.0,
    max_s: float | None = None,
    timeout_s: float = 300.0,
    cancel: threading.Event | None = None,
) -> DecodeScan:
    tools = tools or MediaTools()
    argv = build_decode_scan_argv(path, video_index, audio_index, tools.ffmpeg, start_s, max_s)
    run = run_tool(argv, timeout_s=timeout_s, cancel=cancel, check=False)
    # the null muxer's own complaints (e.g. non-monotonic DTS of a VFR phone clip) are about our
    # throw-away output, not about the file
    lines = [ln for ln in run.stderr.splitlines() if ln.strip() and not ln.startswith("[null @")]
    reached = out_time_s(run.last_progress) or 0.0
    frames_raw = run.last_progress.get("frame", "0")
    frames = int(frames_raw) if frames_raw.isdigit() else 0
    complete = max_s is None or reached < max_s - 1e-3
    return DecodeScan(start_s=start_s, frames=frames, end_s=start_s + reached, returncode=run.returncode,
                      error_lines=tuple(lines[:_MAX_ERROR_LINES]), error_count=len(lines), complete=complete)


_IDET_RE = re.compile(r"Multi frame detection:\s*TFF:\s*(\d+)\s*BFF:\s*(\d+)\s*Progressive:\s*(\d+)"
                      r"\s*Undetermined:\s*(\d+)")


def parse_idet(stderr: str) -> InterlaceScan | None:
    found = _IDET_RE.findall(stderr)
    if not found:
        return None
    tff, bff, prog, und = (int(x) for x in found[-1])
    return InterlaceScan(tff, bff, prog, und)


IDET_THRESHOLD = 1.2


def build_idet_argv(path: str | Path, video_index: int, ffmpeg_exe: str = "ffmpeg", frames: int = 250,
                    start_s: float = 0.0) -> list[str]:
    argv = [ffmpeg_exe, "-nostdin", "-hide_banner", "-nostats", "-v", "info"]
    if start_s > 0:
        argv += ["-ss", f"{start_s:.3f}"]
    # intl_thres 1.2 (default 1.04): the default calls sharp synthetic progressive pictures (testsrc2)
    # interlaced in 4 of 5 frames; at 1.2 they are progressive and 576i/1080i stay TFF (1.5 loses 1080i)
    return argv + ["-i", str(path), "-map", f"0:{video_index}", "-vf", f"idet=intl_thres={IDET_THRESHOLD}",
                   "-frames:v", str(frames),
                   "-an", "-f", "null", "-"]


def interlace_scan(path: str | Path, facts: StreamFacts, *, tools: MediaTools | None = None,
                   frames: int = 250, timeout_s: float = 120.0,
                   cancel: threading.Event | None = None) -> InterlaceScan | None:
    """idet over up to `frames` frames (from 10 % into the file, past black leaders and titles)."""
    tools = tools or MediaTools()
    start = 0.0
    if facts.declared_duration_s and facts.fps and facts.declared_duration_s * facts.fps > 2 * frames:
        start = 0.1 * facts.declared_duration_s
    run = run_tool(build_idet_argv(path, facts.video_stream_index, tools.ffmpeg, frames, start),
                   timeout_s=timeout_s, cancel=cancel, check=False)
    return parse_idet(run.stderr)


def inspect(
    path: str | Path,
    limits: Limits | None = None,
    tools: MediaTools | None = None,
    cancel: threading.Event | None = None,
) -> MediaInfo | Rejection:
    limits = limits or Limits()
    tools = tools or MediaTools()
    path = Path(path)
    if not path.is_file():
        return Rejection(RejectionCode.MISSING_OBJECT, f"no such file: {path.name}", {"path": str(path)})
    size = path.stat().st_size
    if size == 0:
        return Rejection(RejectionCode.EMPTY_FILE, "the file is empty (0 bytes)", {"size_bytes": 0})
    if size > limits.max_bytes:
        return Rejection(RejectionCode.TOO_LARGE_BYTES, f"{size} bytes exceeds {limits.max_bytes}",
                         {"size_bytes": size, "max_bytes": limits.max_bytes})
    head = read_head(path)
    try:
        probe_json = probe(path, tools)
    except ffmpeg.Error as exc:
        message = (exc.stderr or b"").decode("utf-8", errors="replace").replace(str(path), path.name)
        return unreadable(head, message)
    except FileNotFoundError as exc:  # ffprobe itself is missing: not the file's fault
        raise ToolMissing(f"ffprobe not found: {tools.ffprobe}") from exc
    facts = describe(probe_json)
    if isinstance(facts, Rejection):
        return facts
    rejection = check_limits(facts, limits)
    if rejection:
        return rejection
    expected = None if facts.declared_frames is not None else count_packets(path, facts.video_stream_index, tools)
    scans = _scan(path, facts, limits, tools, cancel)
    if isinstance(scans, Rejection):
        return scans
    try:
        idet = interlace_scan(path, facts, tools=tools, cancel=cancel)
    except ToolTimeout:
        idet = None
    return judge_decode(facts, scans, size, limits, expected_frames=expected, interlace=idet)


def _scan(path: Path, facts: StreamFacts, limits: Limits, tools: MediaTools,
          cancel: threading.Event | None) -> list[DecodeScan] | Rejection:
    declared = facts.declared_duration_s
    common = dict(tools=tools, timeout_s=limits.decode_check_timeout_s, cancel=cancel)
    try:
        if declared is not None and declared > limits.decode_check_full_s:
            slice_s = limits.decode_check_slice_s
            head = decode_scan(path, facts.video_stream_index, facts.audio_stream_index, max_s=slice_s, **common)
            tail = decode_scan(path, facts.video_stream_index, facts.audio_stream_index,
                               start_s=max(0.0, declared - slice_s), **common)
            return [head, tail]
        cap = None if declared is not None else limits.max_duration_s + 1.0
        return [decode_scan(path, facts.video_stream_index, facts.audio_stream_index, max_s=cap, **common)]
    except ToolTimeout as exc:
        return Rejection(RejectionCode.ENCODE_FAILED, f"decode check: {exc}", {"stage": "inspect", "timeout": True})
