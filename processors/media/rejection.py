"""Machine-readable rejection of an upload (the value every step returns instead of raising)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class RejectionCode(str, Enum):
    MISSING_OBJECT = "MISSING_OBJECT"        # the original is not in storage (or not on disk)
    EMPTY_FILE = "EMPTY_FILE"                # 0 bytes
    TOO_LARGE_BYTES = "TOO_LARGE_BYTES"
    NOT_A_VIDEO = "NOT_A_VIDEO"              # text, image, unknown bytes
    NO_VIDEO_STREAM = "NO_VIDEO_STREAM"      # audio only (cover art does not count)
    TOO_FEW_FRAMES = "TOO_FEW_FRAMES"        # one frame or fewer
    ZERO_DURATION = "ZERO_DURATION"
    CORRUPT = "CORRUPT"                      # known container that ffprobe/ffmpeg cannot read, or truncated
    TOO_LONG = "TOO_LONG"
    TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
    ENCODE_FAILED = "ENCODE_FAILED"          # ffmpeg failed, timed out or was cancelled
    VALIDATION_FAILED = "VALIDATION_FAILED"  # an output does not match its recipe


# Failures that say nothing about the file itself: the caller may retry them.
RETRIABLE_CODES = frozenset({RejectionCode.ENCODE_FAILED})


@dataclass(frozen=True)
class Rejection:
    code: RejectionCode
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE_CODES

    def as_dict(self) -> dict[str, Any]:
        return {"reason_code": self.code.value, "message": self.message, "details": self.details}
