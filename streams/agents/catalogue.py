"""Catalogue sink: catalogue.titles -> ``vitrina:title:{item}``, catalogue.shelves -> ``vitrina:shelf:{id}``.

Each record is checked with the showcase core's parser first; one that breaks the contract (age
rating outside 0/6/12/16/18, licence ending before it starts, unknown shelf kind, AUTO shelf
without a rule...) goes to the dead-letter topic with the reason instead of into Redis. A batch is
one pipeline: titles, the id set and the change counter the showcase builders watch.
"""
from __future__ import annotations

from processors.showcase import ShelfDef, ShowcaseInputError, Title
from sinks.catalogue_views import write_shelves, write_titles
from sinks.redis_views import async_client
from streams.runtime.app import app, app_settings
from streams.runtime.inbound import dead_letter_failed, decoded_batches, raw_topic
from streams.runtime.metrics import VIEW_WRITES
from streams.kafka.topics import spec

settings = app_settings()
TITLES = spec("catalogue.titles")
SHELVES = spec("catalogue.shelves")

titles_topic = raw_topic(app, TITLES)
shelves_topic = raw_topic(app, SHELVES)


class InvalidRecord(ValueError):
    """The dead letter's error text: '<code> (<field>): <message>'."""

    def __init__(self, err: ShowcaseInputError) -> None:
        super().__init__(f"{err.code} ({err.field or '-'}): {err}")


async def _sink(stream, source, agent: str, parse, write, view: str) -> None:
    redis = async_client(settings)
    async for batch in decoded_batches(app, stream, source, agent):
        good = []
        for event in batch:
            try:
                parse(event.value)
            except ShowcaseInputError as exc:
                await dead_letter_failed(app, event, agent, InvalidRecord(exc))
                continue
            good.append(event.value)
        if not good:
            continue
        async with redis.pipeline(transaction=False) as pipe:
            written = write(pipe, good)
            await pipe.execute()
        VIEW_WRITES.labels(view=view).inc(written)


@app.agent(titles_topic, name="catalogue-titles")
async def sink_titles(stream):
    await _sink(stream, TITLES, "catalogue-titles", Title.from_dict, write_titles, "title")


@app.agent(shelves_topic, name="catalogue-shelves")
async def sink_shelves(stream):
    await _sink(stream, SHELVES, "catalogue-shelves", ShelfDef.from_dict, write_shelves, "shelf")
