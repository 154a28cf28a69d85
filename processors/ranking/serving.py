"""Server-side ranking of the showcase's ML candidates (pure: no I/O, no TensorFlow).

The showcase builder scores the candidates of "for you" and "watch also" with the same LiteRT
runtime and feature code the device uses (``device.DeviceRanker`` over ``features.encode_batch``):

* the candidates are each ML shelf's own pool, scored on demand (``processors.showcase.assemble.
  ModelScores``): the "for you" pool (the best ``candidates`` of the seeds' similar lists after the
  exclusions) and the first ``length x slack`` allowed titles of the "watch also" anchor's list;
* ``ranking_request`` / ``candidate_rows``: the request the model sees (the viewer, surface HOME, the
  recent watched list, the hour of the build's event time; network and device score are unknown
  server-side and stay missing, bucket 0) and one row per candidate (duration from the catalogue);
  ``pxtr`` is absent (zeros): there is no upstream server model, and the impressions the client
  reports from these pages carry the same zeros, so training sees what serving saw;
* ``assign_arm``: the stable split of viewers between the serving versions (the Production model
  and up to 5 playoff candidates): blake2b of salt|viewer, uniform over the arms in their order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from processors.ranking.errors import RankingInputError

MAX_ARMS = 6
ARM_SALT = "vitrina-playoff-v1"


def assign_arm(viewer: str, arms: Sequence[str], salt: str = ARM_SALT) -> str | None:
    """The version serving ``viewer``: the same for the same (viewer, arms), uniform over ``arms``."""
    if not arms:
        return None
    if len(arms) > MAX_ARMS:
        raise RankingInputError("too_many_arms", f"at most {MAX_ARMS} versions serve side by side", field="arms")
    digest = hashlib.blake2b(f"{salt}\x1f{viewer}".encode(), digest_size=8).digest()
    return arms[int.from_bytes(digest, "little") % len(arms)]


def ranking_request(user_id: str | None, device_type: str, recent: Sequence[str], now: datetime,
                    *, surface: str = "HOME", device_id: str | None = None) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "device_id": device_id,
        "device_type": device_type,
        "surface": surface,
        "recent_watched": list(recent),
        "context": {"hour_of_day": now.hour},
    }


def candidate_rows(items: Sequence[str], durations: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{"item_id": item, "item_duration_ms": int(durations.get(item) or 0)} for item in items]
