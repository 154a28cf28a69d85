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


def private_app(stack: Any, data_dir: Path, name: str) -> Any:
    """The session stack's settings for a worker of its own: a fresh app id, topic prefix and data dir,
    topics created (uploads tests run beside each other on one broker)."""
    import dataclasses

    from streams.kafka.topics import ensure_topics

    run = uuid.uuid4().hex[:8]
    mine = dataclasses.replace(stack, app_id=f"vitrina-{name}-{run}", topic_prefix=f"{name}{run}.", data_dir=data_dir)
    ensure_topics(mine)
    return mine


def started_worker(settings: Any, name: str, env: dict[str, str]) -> Any:
    """A worker process on ``settings`` with ``env`` (stop it when done)."""
    from infra.ports import pick_free_ports
    from streams.ops.supervisor import start_worker

    return start_worker(settings, web_port=pick_free_ports(1)[0], name=name, extra_env=env)


def views_client(settings: Any) -> Any:
    import redis as redis_lib

    return redis_lib.Redis.from_url(settings.redis_url, decode_responses=True)
