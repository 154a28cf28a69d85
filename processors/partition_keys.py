"""Partitioning keys of the domain: pure functions the topic registry and the pure test inputs share."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def viewer_key(event: Mapping[str, Any]) -> str:
    """Partitioning key of viewer-scoped events: the user, or the device for guests."""
    return event.get("user_id") or f"device:{event['device_id']}"
