"""Avro event contracts: one ``<namespace>.<Name>.avsc`` file per type.

Files are named by full name so fastavro's ``load_schema`` resolves references
between them (e.g. ``vitrina.DeviceType``). ``history/`` keeps earlier versions
of evolved schemas: their fingerprints stay decodable after a schema changes.
"""
from __future__ import annotations

from pathlib import Path

SCHEMA_DIR = Path(__file__).parent
HISTORY_DIR = SCHEMA_DIR / "history"

# Event records published on topics (shared named types such as DeviceType are not listed).
EVENTS = (
    "vitrina.UploadRequested",
    "vitrina.UploadProcessed",
    "vitrina.UploadRejected",
    "vitrina.UploadStatus",
    "vitrina.PlaybackEvent",
    "vitrina.SessionEvent",
    "vitrina.RankingImpression",
    "vitrina.CatalogueTitle",
    "vitrina.ShelfDefinition",
    "vitrina.SimilarListUpdated",
    "vitrina.ModelPublished",
    "vitrina.ShowcaseUpdated",
    "vitrina.CounterUpdated",
    "vitrina.DeadLetter",
    "vitrina.ShowcaseRebuildRequested",
    "vitrina.CoViewBatch",
    "vitrina.AssetCommand",
)


def schema_path(full_name: str) -> Path:
    return SCHEMA_DIR / f"{full_name}.avsc"
