"""Bitrate ladder (Netflix LGS): MediaInfo -> list of Recipe, a pure function.

Decisions:
* Rungs are named by the SHORT side (so a portrait 1080x1920 phone clip gets "1080p" at 1080x1920):
  240p, 360p, 480p (SD) and 720p, 1080p (HD). A rung is used only if its short side is <= the
  source's displayed short side: never upscale, so HD rungs exist only when the source has them.
* The long side keeps the displayed aspect ratio (rotation and non-square pixels applied) and both
  sides are rounded to even numbers (yuv420p / H.264 need even sizes).
* A source smaller than the lowest rung gets one rung at its own displayed size rounded down to
  even, named after its short side (e.g. 176x144 QCIF -> "144p"), with a bitrate cap scaled by
  pixel count from the 240p cap: there is always at least one SD rendition.
* H.264 in MP4 (faststart) + AAC. Capped CRF: constant quality with maxrate/bufsize as the cap
  (bufsize = 2 x maxrate). Main profile for SD, High for HD. Frame rate capped at 30 fps for SD and
  60 fps for HD; a slower source keeps its own rate. Audio at most stereo.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .inspect import MediaInfo


@dataclass(frozen=True)
class Rung:
    short_side: int
    video_kbps: int
    audio_kbps: int
    profile: str
    fps_cap: float

    @property
    def name(self) -> str:
        return f"{self.short_side}p"

    @property
    def is_hd(self) -> bool:
        return self.short_side >= 720


DEFAULT_RUNGS: tuple[Rung, ...] = (
    Rung(240, 400, 64, "main", 30.0),
    Rung(360, 800, 96, "main", 30.0),
    Rung(480, 1400, 96, "main", 30.0),
    Rung(720, 2800, 128, "high", 60.0),
    Rung(1080, 5000, 128, "high", 60.0),
)
MIN_VIDEO_KBPS = 64


@dataclass(frozen=True)
class Recipe:
    name: str
    width: int
    height: int
    video_kbps: int                 # maxrate (the cap)
    audio_kbps: int | None          # None: the source has no audio, so neither has the output
    codec: str = "h264"
    profile: str = "main"
    fps_cap: float = 30.0
    audio_channels: int | None = None
    crf: int | None = None          # None: EncodeSettings.crf; set by the per-title ladder (complexity.py)
    preset: str | None = None       # None: EncodeSettings.preset; the per-title encoder choice (complexity.py)
    tune: str | None = None         # x264 -tune (None: none); the per-title encoder choice
    aq_mode: int | None = None      # x264 aq-mode (None: x264's default, 1); the per-title encoder choice

    @property
    def bufsize_kbps(self) -> int:
        return 2 * self.video_kbps

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def bandwidth_bps(self) -> int:
        """Peak bandwidth for the HLS master playlist (video cap + audio)."""
        return (self.video_kbps + (self.audio_kbps or 0)) * 1000

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def even(value: float) -> int:
    """Nearest even integer >= 2."""
    return max(2, int(round(value / 2.0)) * 2)


def even_floor(value: int) -> int:
    return max(2, value - value % 2)


def scaled_size(src_w: int, src_h: int, short_side: int) -> tuple[int, int]:
    """Size with the given short side (even) and the source aspect ratio (long side rounded to even)."""
    if src_w <= src_h:
        return even(short_side), min(even(src_h * short_side / src_w), even_floor(src_h))
    return min(even(src_w * short_side / src_h), even_floor(src_w)), even(short_side)


def build_ladder(info: MediaInfo, rungs: tuple[Rung, ...] = DEFAULT_RUNGS) -> list[Recipe]:
    short = info.short_side
    channels = min(2, info.audio_channels or 2) if info.has_audio else None
    recipes = []
    for rung in sorted(rungs, key=lambda r: r.short_side):
        if rung.short_side > short:
            break
        width, height = scaled_size(info.width, info.height, rung.short_side)
        recipes.append(Recipe(
            name=rung.name, width=width, height=height, video_kbps=rung.video_kbps,
            audio_kbps=rung.audio_kbps if info.has_audio else None, profile=rung.profile,
            fps_cap=rung.fps_cap, audio_channels=channels,
        ))
    if not recipes:
        lowest = min(rungs, key=lambda r: r.short_side)
        width, height = even_floor(info.width), even_floor(info.height)
        reference_pixels = even(lowest.short_side * 16 / 9) * lowest.short_side   # 426x240
        kbps = max(MIN_VIDEO_KBPS, round(lowest.video_kbps * width * height / reference_pixels))
        recipes.append(Recipe(
            name=f"{min(width, height)}p", width=width, height=height, video_kbps=kbps,
            audio_kbps=lowest.audio_kbps if info.has_audio else None, profile=lowest.profile,
            fps_cap=lowest.fps_cap, audio_channels=channels,
        ))
    return recipes


def top_recipe(recipes: list[Recipe]) -> Recipe:
    return max(recipes, key=lambda r: r.width * r.height)


def x264_tuning_args(tune: str | None, aq_mode: int | None) -> list[str]:
    """x264's content knobs of a recipe or a probe candidate (none: x264's defaults)."""
    args: list[str] = []
    if tune:
        args += ["-tune", tune]
    if aq_mode is not None:
        args += ["-aq-mode", str(aq_mode)]
    return args
