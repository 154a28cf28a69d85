"""Shared bench plumbing: an embedded stack for the run, machine facts, result files."""
from __future__ import annotations

import json
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from infra.settings import Settings, load

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    mem_gib = None
    try:
        with open("/proc/meminfo") as handle:
            mem_gib = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": mem_gib, "python": platform.python_version(),
            "platform": platform.platform()}


def write_result(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    module = Path(sys.argv[0]).stem
    command = ["python", "-m", f"bench.{module}"] if module != "-c" else ["python"]
    figures = {"command": " ".join(command + sys.argv[1:]), **figures, "machine": machine()}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {path}")
    return path


@contextmanager
def running_stack(settings: Settings | None = None, *, die_with_parent: bool = False) -> Iterator[Settings]:
    """Use the configured stack if it is up; otherwise start the embedded one and stop it after
    (``die_with_parent``: its processes also end when the bench is killed)."""
    from infra.stack import EmbeddedStack
    from streams.topics import ensure_topics

    settings = settings or load()
    stack = EmbeddedStack(settings, die_with_parent=die_with_parent)
    already_up = all(s.healthy for s in stack.status())
    if not already_up:
        stack.up()
    try:
        ensure_topics(settings)
        yield settings
    finally:
        if not already_up:
            stack.down()
