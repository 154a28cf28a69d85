"""Showcase <-> JSON-safe dict (the Redis value and the HTTP body) and its content hash."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Mapping

from .errors import ShowcaseInputError
from .model import Alarm, DroppedShelf, Shelf, ShelfLink, Showcase

VIEW_SCHEMA = 1


def content_hash(showcase: Showcase) -> str:
    """Hash of what the user sees (shelf order, kinds, titles, covers); timestamps and alarms excluded."""
    payload = [
        [s.shelf_id, s.kind, list(s.items), [[l.kind, l.target, l.cover] for l in s.links]] for s in showcase.shelves
    ]
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _json_safe(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def view_meta(showcase: Showcase) -> dict[str, Any]:
    """What the stability rule needs about a stored showcase."""
    return {
        "schema": VIEW_SCHEMA,
        "version": showcase.version,
        "built_at": showcase.built_at.isoformat(),
        "content_hash": content_hash(showcase),
        "is_fallback": showcase.is_fallback,
    }


def to_view(showcase: Showcase) -> dict[str, Any]:
    return {
        "user_key": showcase.user_key,
        "device_type": showcase.device_type,
        "audience": showcase.audience,
        "meta": view_meta(showcase),
        "fallback_reason": showcase.fallback_reason,
        "shelves": [
            {
                "shelf_id": s.shelf_id,
                "kind": s.kind,
                "title": s.title,
                "items": list(s.items),
                "links": [{"kind": l.kind, "target": l.target, "cover": l.cover} for l in s.links],
                "meta": _json_safe(s.meta),
                "row": row,
            }
            for row, s in enumerate(showcase.shelves)
        ],
        "alarms": [
            {"code": a.code, "message": a.message, "severity": a.severity, "details": _json_safe(a.details)}
            for a in showcase.alarms
        ],
        "dropped": [{"shelf_id": d.shelf_id, "kind": d.kind, "reason": d.reason} for d in showcase.dropped],
    }


def from_view(view: Mapping[str, Any]) -> Showcase:
    """Inverse of to_view (shelf meta comes back with lists instead of tuples)."""
    try:
        meta = view["meta"]
        if meta.get("schema") != VIEW_SCHEMA:
            raise ShowcaseInputError("unsupported_view_schema", f"view schema {meta.get('schema')!r}", field="meta.schema")
        return Showcase(
            user_key=view["user_key"],
            device_type=view["device_type"],
            audience=view.get("audience", "adult"),
            built_at=datetime.fromisoformat(meta["built_at"]),
            version=int(meta["version"]),
            is_fallback=bool(meta["is_fallback"]),
            fallback_reason=view.get("fallback_reason"),
            shelves=tuple(
                Shelf(
                    s["shelf_id"],
                    s["kind"],
                    s.get("title", ""),
                    tuple(s.get("items", ())),
                    tuple(ShelfLink(l["kind"], l["target"], l.get("cover", "")) for l in s.get("links", ())),
                    dict(s.get("meta", {})),
                )
                for s in view["shelves"]
            ),
            alarms=tuple(Alarm(a["code"], a["message"], a.get("severity", "warning"), a.get("details", {})) for a in view.get("alarms", ())),
            dropped=tuple(DroppedShelf(d["shelf_id"], d["kind"], d["reason"]) for d in view.get("dropped", ())),
        )
    except ShowcaseInputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ShowcaseInputError("invalid_view", f"not a showcase view: {type(err).__name__}: {err}") from None
