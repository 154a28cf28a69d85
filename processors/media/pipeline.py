"""Orchestration of one upload on local files: content key -> inspect -> ladder -> encode ->
thumbnails -> validate -> quality. Returns every output as a local path with its object key and
metadata (the caller uploads them and publishes the processed event), or a Rejection.

Blocking; from asyncio use `EncoderPool.run(process_upload, ...)`, which also wires `cancel`.

Dedupe belongs BEFORE this call (Mail.Ru: MD5 right after upload, skip transcoding on a hit): hash
while downloading with `ContentKeyHasher`, look the asset id up, and pass `content_key=` here so the
file is not read twice. `workdir` should be dedicated to the upload: outputs are written there as
`<rung>.mp4` (+ `<rung>.m3u8`/`<rung>.m4s` with HLS, `master.m3u8`) and `thumbs/*.jpg`; on a
rejection everything this call wrote is removed again.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from infra.logs import get_logger

from . import layout
from .content_key import ContentKey, content_key_of_path
from .encode import EncodeResult, EncodeSettings, encode_chunked, encode_renditions
from .inspect import AudioTrack, MediaInfo, inspect
from .complexity import (Complexity, EffortBudget, candidates_from, ladder_decision, per_title_ladder,
                         probe_complexity)
from .ladder import Recipe, build_ladder
from .limits import Limits
from .quality import QualityError, measure_quality
from .rejection import Rejection, RejectionCode
from .thumbnails import ThumbnailSpec, make_thumbnails, plan_thumbnails
from .tools import MediaTools, ToolCancelled, ToolFailed, ToolTimeout
from .validate import (Tolerance, Violation, check_media_playlist, rejection_for, validate_audio,
                       validate_rendition, validate_thumbnail)

log = get_logger("processors.media.pipeline")

# share of the overall progress at the START of each stage
STAGES = {"inspect": 0.0, "complexity": 0.03, "encode": 0.08, "thumbnails": 0.80, "validate": 0.83, "quality": 0.85, "done": 1.0}


@dataclass(frozen=True)
class Progress:
    stage: str
    fraction: float          # overall, 0..1
    stage_fraction: float    # within the stage, 0..1


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class OutputFile:
    path: Path
    object_key: str
    content_type: str
    size_bytes: int


@dataclass(frozen=True)
class RenditionOutput:
    recipe: Recipe
    file: OutputFile
    duration_s: float               # measured on the output
    video_kbps_measured: int
    codecs: str                     # RFC 6381, for the HLS master
    quality: dict[str, float] = field(default_factory=dict)
    hls_files: tuple[OutputFile, ...] = ()

    def as_event(self) -> dict[str, Any]:
        """A vitrina.Rendition record."""
        return {"name": self.recipe.name, "object_key": self.file.object_key, "width": self.recipe.width,
                "height": self.recipe.height, "video_kbps": self.recipe.video_kbps,
                "bytes": self.file.size_bytes, "duration_s": self.duration_s, "codec": self.recipe.codec,
                "quality": dict(self.quality)}


@dataclass(frozen=True)
class AudioOutput:
    """An extra audio track of the source (not the default one), an HLS audio rendition."""
    track: AudioTrack
    file: OutputFile
    hls_files: tuple[OutputFile, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.track.name, "object_key": self.file.object_key, "language": self.track.language,
                "source_stream_index": self.track.index, "bytes": self.file.size_bytes}


@dataclass(frozen=True)
class ThumbnailOutput:
    spec: ThumbnailSpec
    file: OutputFile

    def as_event(self) -> dict[str, Any]:
        """A vitrina.Thumbnail record."""
        return {"kind": self.spec.kind, "object_key": self.file.object_key,
                "width": self.spec.width, "height": self.spec.height}


@dataclass(frozen=True)
class ProcessResult:
    content_key: ContentKey
    media: MediaInfo
    renditions: list[RenditionOutput]
    thumbnails: list[ThumbnailOutput]
    master_playlist: OutputFile | None
    timings_s: dict[str, float]
    encode_commands: list[list[str]]
    quality_errors: dict[str, str] = field(default_factory=dict)
    audio: list[AudioOutput] = field(default_factory=list)
    complexity: Complexity | None = None      # the per-title probe, when the ladder came from it

    @property
    def asset_id(self) -> str:
        return str(self.content_key)

    @property
    def processing_s(self) -> float:
        return sum(self.timings_s.values())

    def files(self) -> list[OutputFile]:
        """Everything to upload, playlists last (so a player never sees a playlist before its media)."""
        media = [r.file for r in self.renditions] + [a.file for a in self.audio] + [t.file for t in self.thumbnails]
        hls = [f for r in [*self.renditions, *self.audio] for f in r.hls_files]
        segments = [f for f in hls if f.object_key.endswith(".m4s")]
        playlists = [f for f in hls if f.object_key.endswith(".m3u8")]
        return media + segments + playlists + ([self.master_playlist] if self.master_playlist else [])

    def as_event_fields(self) -> dict[str, Any]:
        """The UploadProcessed fields this step knows (the caller adds upload ids and timestamps)."""
        return {"asset_id": self.asset_id, "duration_s": self.media.duration_s,
                "source_width": self.media.width, "source_height": self.media.height,
                "renditions": [r.as_event() for r in self.renditions],
                "thumbnails": [t.as_event() for t in self.thumbnails],
                "hls_master_key": self.master_playlist.object_key if self.master_playlist else None,
                "processing_s": round(self.processing_s, 3),
                # the per-title decision (CRF, caps, encoder) with the probe's measured reasons; None = fixed
                "ladder": ladder_decision(self.complexity, [r.recipe for r in self.renditions])}


def _output(path: Path, key: str) -> OutputFile:
    return OutputFile(path=path, object_key=key, content_type=layout.content_type(key),
                      size_bytes=path.stat().st_size)


def _avc_codec_string(path: Path, recipe: Recipe) -> str:
    """avc1.PPCCLL from the avcC box of the (faststart, so moov is at the front) MP4."""
    with open(path, "rb") as f:
        head = f.read(4 * 1024 * 1024)
    at = head.find(b"avcC")
    if at >= 0 and len(head) >= at + 8:
        profile, constraints, level = head[at + 5], head[at + 6], head[at + 7]
        return f"avc1.{profile:02x}{constraints:02x}{level:02x}"
    return layout.avc1_codec(recipe.profile, 40)


def process_upload(
    local_path: str | Path,
    workdir: str | Path,
    limits: Limits | None = None,
    *,
    tools: MediaTools | None = None,
    settings: EncodeSettings | None = None,
    tolerance: Tolerance | None = None,
    content_key: ContentKey | None = None,
    measure: bool = True,
    quality_max_seconds: float = 10.0,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ProcessResult | Rejection:
    """Raises ToolCancelled when `cancel` is set and ToolMissing when ffmpeg/ffprobe are absent;
    every problem with the file itself comes back as a Rejection. Defaults are the dataclass
    defaults (pass `Limits.from_env()`, `EncodeSettings.from_env()`, `MediaTools.from_env()` to
    honour VITRINA_* variables)."""
    started = time.monotonic()
    result = _process(local_path, workdir, limits, tools=tools, settings=settings, tolerance=tolerance,
                      content_key=content_key, measure=measure, quality_max_seconds=quality_max_seconds,
                      on_progress=on_progress, cancel=cancel)
    elapsed = round(time.monotonic() - started, 3)
    if isinstance(result, Rejection):
        log.info("upload rejected", file=Path(local_path).name, reason_code=result.code.value,
                 message=result.message, elapsed_s=elapsed)
    else:
        log.info("upload processed", file=Path(local_path).name, asset_id=result.asset_id,
                 renditions=[r.recipe.name for r in result.renditions],
                 ladder={r.recipe.name: {"kbps": r.recipe.video_kbps, "crf": r.recipe.crf, "preset": r.recipe.preset,
                                         "tune": r.recipe.tune, "aq_mode": r.recipe.aq_mode}
                         for r in result.renditions},
                 encoder_choice=result.complexity.choice.as_dict() if result.complexity and result.complexity.choice
                 else None,
                 complexity=result.complexity.as_dict() if result.complexity else None, timings_s=result.timings_s,
                 quality={r.recipe.name: r.quality for r in result.renditions}, elapsed_s=elapsed)
    return result


def _process(
    local_path: str | Path,
    workdir: str | Path,
    limits: Limits | None = None,
    *,
    tools: MediaTools | None = None,
    settings: EncodeSettings | None = None,
    tolerance: Tolerance | None = None,
    content_key: ContentKey | None = None,
    measure: bool = True,
    quality_max_seconds: float = 10.0,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ProcessResult | Rejection:
    limits = limits or Limits()
    tools = tools or MediaTools()
    settings = settings or replace(EncodeSettings(), ffmpeg=tools.ffmpeg)
    tolerance = tolerance or Tolerance()
    source = Path(local_path)
    workdir = Path(workdir)
    timings: dict[str, float] = {}

    def report(stage: str, within: float = 0.0) -> None:
        if on_progress is None:
            return
        names = list(STAGES)
        start = STAGES[stage]
        end = STAGES[names[min(names.index(stage) + 1, len(names) - 1)]]
        on_progress(Progress(stage, round(start + (end - start) * within, 4), round(within, 4)))

    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[stage] = round(now - clock, 3)
        clock = now

    report("inspect")
    info = inspect(source, limits, tools, cancel)
    if isinstance(info, Rejection):
        return info
    key = content_key or content_key_of_path(source)
    asset_id = str(key)
    lap("inspect")

    recipes = build_ladder(info)
    complexity: Complexity | None = None
    if settings.wants_per_title(info.duration_s):
        report("complexity")
        try:
            complexity = probe_complexity(
                source, info, tools=tools, ffmpeg_exe=settings.ffmpeg, cancel=cancel,
                candidates=candidates_from(settings.per_title_candidates, settings.preset),
                budget=EffortBudget.of(settings), target_vmaf=settings.per_title_target_vmaf,
                ladder_pixels=sum(r.width * r.height for r in recipes))
        except ToolCancelled:
            raise
        except (ToolFailed, QualityError, OSError, ValueError) as exc:   # advisory: the fixed ladder stays
            log.warning("complexity_probe_failed", file=source.name, error=str(exc))
        if complexity is not None:
            recipes = per_title_ladder(info, complexity, target_vmaf=settings.per_title_target_vmaf, base=recipes)
        lap("complexity")
    workdir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []

    def reject(rejection: Rejection) -> Rejection:
        for path in created:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):   # only if empty: the workdir may hold the caller's files
            (workdir / "thumbs").rmdir()
        return rejection

    report("encode")
    try:
        if settings.wants_chunked(info):
            encoded: EncodeResult = encode_chunked(
                source, info, recipes, workdir, settings, chunk_s=settings.chunk_s, workers=settings.chunk_workers,
                timeout_s=limits.encode_timeout_s,
                on_progress=(lambda f: report("encode", f)) if on_progress else None, cancel=cancel)
        else:
            encoded = encode_renditions(
                source, info, recipes, workdir, settings, timeout_s=limits.encode_timeout_s,
                on_progress=(lambda f: report("encode", f)) if on_progress else None, cancel=cancel)
    except ToolCancelled:
        raise
    except ToolTimeout as exc:
        return reject(Rejection(RejectionCode.ENCODE_FAILED, str(exc), {"stage": "encode", "timeout": True}))
    except ToolFailed as exc:
        return reject(Rejection(RejectionCode.ENCODE_FAILED, str(exc), {"stage": "encode"}))
    for r in [*encoded.renditions, *encoded.audio]:
        created += [r.path] + [p for p in (r.hls_playlist, r.hls_segments) if p is not None]
    lap("encode")

    report("thumbnails")
    specs = plan_thumbnails(info, recipes)
    try:
        thumbs = make_thumbnails(source, info, specs, workdir / "thumbs", tools=tools, cancel=cancel)
    except ToolCancelled:
        reject(Rejection(RejectionCode.ENCODE_FAILED, "cancelled"))
        raise
    except ToolFailed as exc:
        return reject(Rejection(RejectionCode.ENCODE_FAILED, f"thumbnails: {exc}", {"stage": "thumbnails"}))
    created += [t.path for t in thumbs]
    lap("thumbnails")

    report("validate")
    violations: list[Violation] = []
    measured: dict[str, tuple[float, int]] = {}
    for r in encoded.renditions:
        found, data = validate_rendition(r.path, r.recipe, info, tools=tools, tolerance=tolerance)
        violations += found
        if data is not None:
            video = next((s for s in data.get("streams", []) if s.get("codec_type") == "video"), {})
            measured[r.recipe.name] = (float(data.get("format", {}).get("duration") or 0.0),
                                       int(float(video.get("bit_rate") or 0) / 1000))
        if r.hls_playlist is not None and r.hls_segments is not None:
            if r.hls_playlist.is_file() and r.hls_segments.is_file():
                violations += check_media_playlist(r.hls_playlist.read_text(), r.recipe, info,
                                                   r.hls_segments.stat().st_size, tolerance)
            else:
                violations.append(Violation(r.recipe.name, "hls_files", True, False))
    for a in encoded.audio:
        violations += validate_audio(a.path, a.track.name, info, tools=tools, tolerance=tolerance)
        if a.hls_playlist is not None and not (a.hls_playlist.is_file() and a.hls_segments
                                               and a.hls_segments.is_file()):
            violations.append(Violation(a.track.name, "hls_files", True, False))
    for thumb in thumbs:
        violations += validate_thumbnail(thumb.path, thumb.spec, tools=tools)
    rejection = rejection_for(violations)
    if rejection:
        return reject(rejection)
    lap("validate")

    report("quality")
    qualities: dict[str, dict[str, float]] = {}
    quality_errors: dict[str, str] = {}
    if measure:
        for i, r in enumerate(encoded.renditions):
            try:
                qualities[r.recipe.name] = measure_quality(source, info, r.path, r.recipe, tools=tools,
                                                           max_seconds=quality_max_seconds, cancel=cancel)
            except ToolCancelled:
                reject(Rejection(RejectionCode.ENCODE_FAILED, "cancelled"))
                raise
            except (ToolFailed, QualityError, ValueError) as exc:
                quality_errors[r.recipe.name] = str(exc)   # quality is advisory: never rejects
            report("quality", (i + 1) / len(encoded.renditions))
    lap("quality")

    renditions = []
    for r in encoded.renditions:
        hls_files: tuple[OutputFile, ...] = ()
        if r.hls_playlist is not None and r.hls_segments is not None:
            hls_files = (_output(r.hls_segments, layout.segment_file_key(asset_id, r.recipe.name)),
                         _output(r.hls_playlist, layout.media_playlist_key(asset_id, r.recipe.name)))
        duration, kbps = measured[r.recipe.name]
        renditions.append(RenditionOutput(
            recipe=r.recipe, file=_output(r.path, layout.rendition_key(asset_id, r.recipe.name)),
            duration_s=duration, video_kbps_measured=kbps, codecs=_avc_codec_string(r.path, r.recipe),
            quality=qualities.get(r.recipe.name, {}), hls_files=hls_files))
    audio_outputs = []
    for a in encoded.audio:
        hls_files = ()
        if a.hls_playlist is not None and a.hls_segments is not None:
            hls_files = (_output(a.hls_segments, layout.segment_file_key(asset_id, a.track.name)),
                         _output(a.hls_playlist, layout.media_playlist_key(asset_id, a.track.name)))
        audio_outputs.append(AudioOutput(a.track, _output(a.path, layout.rendition_key(asset_id, a.track.name)),
                                         hls_files))
    master = None
    if all(r.hls_files for r in renditions) and all(a.hls_files for a in audio_outputs):
        variants = [layout.Variant(
            uri=f"{r.recipe.name}.m3u8",
            bandwidth_bps=max(r.recipe.bandwidth_bps, (r.video_kbps_measured + (r.recipe.audio_kbps or 0)) * 1000),
            average_bandwidth_bps=int(r.file.size_bytes * 8 / max(r.duration_s, 1e-3)),
            width=r.recipe.width, height=r.recipe.height,
            codecs=r.codecs + (f",{layout.AAC_LC}" if r.recipe.audio_kbps else ""),
            frame_rate=min(info.fps, r.recipe.fps_cap) if info.fps else None) for r in renditions]
        audio_media = []
        if audio_outputs and any(r.recipe.audio_kbps for r in renditions):
            chosen = next((t for t in info.audio_tracks if t.index == info.audio_stream_index), None)
            audio_media.append(layout.AudioMedia(name=_track_label(chosen, 0), uri=None,
                                                 language=chosen.language if chosen else None, default=True))
            audio_media += [layout.AudioMedia(name=_track_label(a.track, n), uri=f"{a.track.name}.m3u8",
                                              language=a.track.language)
                            for n, a in enumerate(audio_outputs, start=1)]
        master_path = workdir / "master.m3u8"
        master_path.write_text(layout.render_master_playlist(variants, audio_media))
        master = _output(master_path, layout.master_playlist_key(asset_id))
    thumbnails = [ThumbnailOutput(t.spec, _output(t.path, layout.thumbnail_key(asset_id, t.spec.name)))
                  for t in thumbs]
    report("done", 1.0)
    return ProcessResult(content_key=key, media=info, renditions=renditions, thumbnails=thumbnails,
                         master_playlist=master, timings_s=timings, encode_commands=encoded.commands,
                         quality_errors=quality_errors, audio=audio_outputs, complexity=complexity)


def _track_label(track: AudioTrack | None, n: int) -> str:
    label = (track.title or track.language) if track else None
    label = "".join(ch for ch in (label or "") if ch.isprintable() and ch not in '"\\')[:40]
    return label or f"Track {n + 1}"
