"""Helpers of the uploads tests: unique generated clips, answers, the worker's JSON log."""
from __future__ import annotations

from support.waiting import wait_for

import json
import uuid
from pathlib import Path
from typing import Any, Callable

from demo.upload_samples import audio_only, video


def unique_clip(out_dir: Path, width: int = 320, height: int = 180, seconds: float = 1.0, *, audio: bool = True,
                fps: int = 25) -> Path:
    """A small generated clip whose bytes are new in every call (a fresh content key)."""
    tag = uuid.uuid4().hex
    return video(f"clip-{tag[:12]}.mp4", width, height, seconds, fps=fps, audio=audio).make(out_dir, tag)


def unique_audio(out_dir: Path) -> Path:
    tag = uuid.uuid4().hex
    return audio_only(f"audio-{tag[:12]}.m4a", 1.0).make(out_dir, tag)


def log_events(log_path: Path, event: str, **fields: Any) -> list[dict]:
    """JSON log lines of a worker with this event name and these field values."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or f'"{event}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            found.append(record)
    return found


def poll(predicate: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.3) -> Any:
    return wait_for(predicate, what, timeout_s, every_s)
