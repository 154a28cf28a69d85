"""Content-addressed object keys for an asset and the HLS master playlist (pure functions).

    assets/<asset_id>/<rung>.mp4            progressive MP4 (faststart) per rung
    assets/<asset_id>/<rung>.m3u8           HLS media playlist (byte ranges into <rung>.m4s)
    assets/<asset_id>/<rung>.m4s            the same encode as fragmented MP4, one file per rung
    assets/<asset_id>/thumbs/<name>.jpg     preview_1, preview_2, poster
    assets/<asset_id>/master.m3u8           HLS master playlist over the rungs

The asset id is the content key `<md5>-<size>`, so a duplicate upload maps to the same keys.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

ROOT = "assets"
_ASSET_ID = re.compile(r"^[0-9a-f]{32}-\d+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".jpg": "image/jpeg",
}


def _check(asset_id: str, name: str | None = None) -> None:
    if not _ASSET_ID.match(asset_id):
        raise ValueError(f"not an asset id (<md5>-<size>): {asset_id!r}")
    if name is not None and (not _NAME.match(name) or ".." in name):
        raise ValueError(f"unsafe object name: {name!r}")


def asset_prefix(asset_id: str) -> str:
    _check(asset_id)
    return f"{ROOT}/{asset_id}/"


def rendition_key(asset_id: str, rung: str) -> str:
    _check(asset_id, rung)
    return f"{ROOT}/{asset_id}/{rung}.mp4"


def media_playlist_key(asset_id: str, rung: str) -> str:
    _check(asset_id, rung)
    return f"{ROOT}/{asset_id}/{rung}.m3u8"


def segment_file_key(asset_id: str, rung: str) -> str:
    _check(asset_id, rung)
    return f"{ROOT}/{asset_id}/{rung}.m4s"


def thumbnail_key(asset_id: str, name: str) -> str:
    _check(asset_id, name)
    return f"{ROOT}/{asset_id}/thumbs/{name}.jpg"


def master_playlist_key(asset_id: str) -> str:
    _check(asset_id)
    return f"{ROOT}/{asset_id}/master.m3u8"


def content_type(key: str) -> str:
    for suffix, kind in CONTENT_TYPES.items():
        if key.endswith(suffix):
            return kind
    return "application/octet-stream"


@dataclass(frozen=True)
class Variant:
    uri: str                    # relative to the master playlist, e.g. "720p.m3u8"
    bandwidth_bps: int          # peak
    average_bandwidth_bps: int
    width: int
    height: int
    codecs: str                 # e.g. 'avc1.64001f,mp4a.40.2'
    frame_rate: float | None = None


@dataclass(frozen=True)
class AudioMedia:
    """An EXT-X-MEDIA audio rendition. uri=None: the audio muxed into every variant (the default track)."""
    name: str
    uri: str | None
    language: str | None = None
    default: bool = False


AUDIO_GROUP = "aud"

AVC_PROFILE_IDC = {"baseline": 0x42, "main": 0x4D, "high": 0x64}
AVC_CONSTRAINTS = {"baseline": 0xC0, "main": 0x40, "high": 0x00}


def avc1_codec(profile: str, level: int, constraints: int | None = None) -> str:
    """RFC 6381 codec string, e.g. avc1_codec('high', 31) == 'avc1.64001f'."""
    idc = AVC_PROFILE_IDC[profile.lower()]
    flags = AVC_CONSTRAINTS[profile.lower()] if constraints is None else constraints
    return f"avc1.{idc:02x}{flags:02x}{level:02x}"


AAC_LC = "mp4a.40.2"


def render_master_playlist(variants: Sequence[Variant], audio: Sequence[AudioMedia] = ()) -> str:
    """HLS master playlist, variants sorted by bandwidth (lowest first, the usual start choice). With
    `audio`, one EXT-X-MEDIA per track in group "aud" and every variant names the group."""
    if not variants:
        raise ValueError("a master playlist needs at least one variant")
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for a in audio:
        if '"' in a.name or "\n" in a.name or (a.uri and ('"' in a.uri or "\n" in a.uri)):
            raise ValueError(f"bad audio rendition {a!r}")
        attrs = [f'TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}"', f'NAME="{a.name}"']
        if a.language:
            attrs.append(f'LANGUAGE="{a.language}"')
        attrs.append(f"DEFAULT={'YES' if a.default else 'NO'},AUTOSELECT=YES")
        if a.uri:
            attrs.append(f'URI="{a.uri}"')
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))
    for v in sorted(variants, key=lambda v: v.bandwidth_bps):
        if "\n" in v.uri or '"' in v.codecs:
            raise ValueError(f"bad variant {v!r}")
        attrs = [f"BANDWIDTH={int(v.bandwidth_bps)}", f"AVERAGE-BANDWIDTH={int(v.average_bandwidth_bps)}",
                 f"RESOLUTION={v.width}x{v.height}", f'CODECS="{v.codecs}"']
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        if audio:
            attrs.append(f'AUDIO="{AUDIO_GROUP}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), v.uri]
    return "\n".join(lines) + "\n"
