"""Acceptance limits for uploads; every default can be overridden by a VITRINA_MEDIA_* env var."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 4 * 1024**3
    max_duration_s: float = 4 * 3600.0
    # displayed width x height: up to 8K (DCI 4K 4096x2160 and UHD camera files are scaled into the
    # ladder; the ladder never goes above 1080p)
    max_pixels: int = 8192 * 4320
    min_frames: int = 2                        # "one frame or fewer" is rejected
    # Decode check: a file is CORRUPT when fewer than this share of the frames the container
    # announces can be decoded, or when decoding stops before this share of the declared duration.
    min_decodable_ratio: float = 0.9
    # Files up to this long are decoded completely by the check; longer ones get a head and a tail slice.
    decode_check_full_s: float = 300.0
    decode_check_slice_s: float = 10.0
    decode_check_timeout_s: float = 300.0
    probe_timeout_s: float = 60.0
    encode_timeout_s: float = 3600.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Limits":
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f"VITRINA_MEDIA_{f.name.upper()}")
            if raw is not None and raw.strip():
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
        return cls(**values)
