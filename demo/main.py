"""The main job: stack up, workers up, a realistic stream in, the resulting views printed.

Each capability adds a stage with ``@stage(order, name)``; stages run in order
and share a ``DemoContext``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from infra.settings import Settings
from streams.kafka.producer import EventProducer
from streams.ops.supervisor import WorkerProcess


@dataclass
class DemoContext:
    settings: Settings
    producer: EventProducer
    worker: WorkerProcess
    size: str
    seed: int
    titles: list[dict] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def section(self, title: str) -> None:
        print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


Stage = Callable[[DemoContext], None]
STAGES: list[tuple[int, str, Stage]] = []

SIZES = {  # viewers, titles
    "small": (150, 300),
    "medium": (1000, 800),
    "large": (5000, 2000),
}


def stage(order: int, name: str) -> Callable[[Stage], Stage]:
    def register(fn: Stage) -> Stage:
        STAGES.append((order, name, fn))
        STAGES.sort(key=lambda s: s[0])
        return fn
    return register


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
