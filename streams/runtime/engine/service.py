"""Start registered engine processors with the Faust worker (``@app.service``)."""
from __future__ import annotations

import asyncio
import time

import mode
from prometheus_client import Counter

from infra.logs import get_logger

from streams.runtime.app import app, app_settings
from streams.runtime.engine import PROCESSORS
from streams.runtime.engine.runner import Processor, Runner

_processors: list[Processor] = []
log = get_logger("vitrina.engine")
RESTARTS = Counter("vitrina_engine_restarts_total", "Engine processors restarted after a failure", ["processor"])


def register(processor: Processor) -> Processor:
    """Run ``processor`` in every worker that imports its module (see streams/agents/__init__.py)."""
    if processor.name not in PROCESSORS:
        raise ValueError(f"engine processor {processor.name!r} is not listed in streams/runtime/engine/__init__.py "
                         "PROCESSORS (its consumer group must be known to the status page and ops tools)")
    _processors.append(processor)
    return processor


def registered() -> list[Processor]:
    return list(_processors)


_running: list[Runner] = []


def running() -> list[Runner]:
    """The runners of this worker that are up now (the lag metric reads their groups and partitions)."""
    return list(_running)


@app.service
class EngineService(mode.Service):
    def __post_init__(self) -> None:
        self.tasks: list[asyncio.Task] = []
        self.stopping = False

    async def on_start(self) -> None:
        self.stopping = False
        for processor in _processors:
            self.tasks.append(asyncio.ensure_future(self.supervise(processor)))

    async def supervise(self, processor: Processor) -> None:
        """Run the processor; after a failure (broker gone at start, a bug) start it again with a
        fresh consumer, backing off up to 30 s: its state comes back from the changelog."""
        backoff = 1.0
        while not self.stopping:
            runner = Runner(processor, app_settings())
            _running.append(runner)
            started = time.monotonic()
            try:
                await runner.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged by the runner; keep the processor alive
                RESTARTS.labels(processor=processor.name).inc()
                log.error("engine_restart", processor=processor.name, error=repr(exc), backoff_s=backoff)
            finally:
                _running.remove(runner)
            backoff = 1.0 if time.monotonic() - started > 60 else min(30.0, backoff * 2)
            await asyncio.sleep(backoff)

    async def on_stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(runner.stop() for runner in running()), return_exceptions=True)
        for task in self.tasks:
            if not task.done():
                task.cancel()
