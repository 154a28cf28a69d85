"""A seeded whole-pipeline input: catalogue + shelves, and the synthetic ranking stream's playback and
impressions mapped onto the catalogue's films (so histories, continue-watching and popularity refer
to real titles). Used by the replay/crash tests and bench/replay.py."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass
class PipelineInput:
    titles: list[dict]
    shelves: list[dict]
    playback: list[dict]
    impressions: list[dict]

    @property
    def starts(self) -> dict[str, int]:
        """item -> START events (what the play counter must end with)."""
        counts: dict[str, int] = {}
        for event in self.playback:
            if event["event_type"] == "START":
                counts[event["item_id"]] = counts.get(event["item_id"], 0) + 1
        return counts

    @property
    def viewers(self) -> set[str]:
        """Partitioning keys of the viewers (the topic registry's rule)."""
        from processors.partition_keys import viewer_key
        return {viewer_key(event) for event in self.playback}


def make_pipeline_input(titles: int, requests: int, seed: int, *, users: int, items: int,
                        clusters: int) -> PipelineInput:
    from demo.catalogue import synthetic_titles
    from demo.ranking_synthetic import SyntheticConfig, generate
    from demo.showcase_sample import shelves_for_catalogue

    catalogue = synthetic_titles(titles, seed=seed)
    shelves = shelves_for_catalogue(catalogue, seed=seed, now=datetime.now(timezone.utc))
    films = sorted(t["item_id"] for t in catalogue if t["series_id"] is None and not t["adult"])
    stream = generate(SyntheticConfig(seed=seed, users=users, items=items, clusters=clusters, requests=requests))
    mapping: dict[str, str] = {}

    def title_of(item: str) -> str:
        return mapping.setdefault(item, films[len(mapping) % len(films)])

    playback = [{**e, "item_id": title_of(e["item_id"])} for e in stream.playbacks]
    impressions = [{**e, "item_id": title_of(e["item_id"]), "recent_watched": [title_of(i) for i in e["recent_watched"]]}
                   for e in stream.impressions]
    return PipelineInput(catalogue, shelves, playback, impressions)
