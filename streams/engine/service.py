"""Start registered engine processors with the Faust worker (``@app.service``)."""
from __future__ import annotations

import asyncio

import mode

from streams.app import app
from streams.engine.runner import Processor, Runner

_processors: list[Processor] = []


def register(processor: Processor) -> Processor:
    """Run ``processor`` in every worker that imports its module (see streams/agents/__init__.py)."""
    _processors.append(processor)
    return processor


def registered() -> list[Processor]:
    return list(_processors)


@app.service
class EngineService(mode.Service):
    def __post_init__(self) -> None:
        self.runners: list[Runner] = []
        self.tasks: list[asyncio.Task] = []

    async def on_start(self) -> None:
        for processor in _processors:
            runner = Runner(processor)
            self.runners.append(runner)
            self.tasks.append(asyncio.ensure_future(runner.run()))

    async def on_stop(self) -> None:
        await asyncio.gather(*(runner.stop() for runner in self.runners), return_exceptions=True)
        for task in self.tasks:
            if not task.done():
                task.cancel()
