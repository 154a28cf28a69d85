"""Plain data of the showcase core: catalogue titles, shelf definitions, viewer, history, stats, output."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from . import _fields as f
from .config import DEVICE_TYPES
from .errors import ShowcaseInputError
from .version import VersionKey, parse_version

AGE_RATINGS = (0, 6, 12, 16, 18)
SHELF_KINDS = (
    "BANNER_CAROUSEL",
    "CONTINUE_WATCHING",
    "FAVOURITE_CHANNELS",
    "VOD",
    "ML_FOR_YOU",
    "ML_WATCH_ALSO",
    "ORIGINALS_BANNER",
    "SUPER_SHELF",
    "AUTO",
)
AUTO_SORTS = ("POPULAR", "NEWEST", "RATING")
LINK_KINDS = ("COLLECTION", "TITLE", "WEB")
_LINK_ALIASES = {"SHELF": "COLLECTION", "PAGE": "WEB", "URL": "WEB"}


def _device_set(values: tuple[str, ...], key: str, rid: str | None) -> frozenset[str]:
    upper = frozenset(v.upper() for v in values)
    unknown = sorted(upper - set(DEVICE_TYPES))
    if unknown:
        raise ShowcaseInputError("invalid_field", f"unknown device types {unknown} in {key!r}", field=key, record_id=rid)
    return upper


def _norm_words(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip().lower() for v in values if v.strip()))


@dataclass(frozen=True, slots=True)
class Title:
    item_id: str
    title: str
    original_title: str = ""
    genres: tuple[str, ...] = ()  # lower-case
    tags: frozenset[str] = frozenset()  # lower-case
    age_rating: int = 0
    kids: bool = False
    adult: bool = False
    paid: bool = False
    licence_start: datetime | None = None
    licence_end: datetime | None = None
    device_rights: frozenset[str] = frozenset()  # empty = every device
    boost: bool = False
    series_id: str | None = None
    season: int | None = None
    episode: int | None = None
    editorial_flags: frozenset[str] = frozenset()  # lower-case
    duration_ms: int = 0
    release_year: int | None = None
    rating: float | None = None
    updated_at: datetime | None = None

    @property
    def is_episode(self) -> bool:
        return self.series_id is not None and self.episode is not None

    @property
    def is_series(self) -> bool:
        return self.series_id is not None and self.episode is None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Title":
        rid = d.get("item_id") if isinstance(d, Mapping) and isinstance(d.get("item_id"), str) else None
        item_id = f.req_str(d, "item_id", rid)
        age = f.opt_int(d, "age_rating", rid)
        if age is None:
            age = 0
        if age not in AGE_RATINGS:
            raise ShowcaseInputError(
                "invalid_field", f"age_rating must be one of {AGE_RATINGS}, got {age}", field="age_rating", record_id=rid
            )
        start, end = f.opt_datetime(d, "licence_start", rid), f.opt_datetime(d, "licence_end", rid)
        if start is not None and end is not None and end <= start:
            raise ShowcaseInputError(
                "invalid_field", "licence_end must be after licence_start", field="licence_end", record_id=rid
            )
        season, episode = f.opt_int(d, "season", rid, minimum=0), f.opt_int(d, "episode", rid, minimum=0)
        series_id = f.opt_str(d, "series_id", rid)
        if episode is not None and series_id is None:
            raise ShowcaseInputError("invalid_field", "an episode needs a series_id", field="series_id", record_id=rid)
        if episode is not None and season is None:
            season = 1
        return cls(
            item_id=item_id,
            title=f.opt_str(d, "title", rid) or item_id,
            original_title=f.opt_str(d, "original_title", rid) or "",
            genres=_norm_words(f.str_list(d, "genres", rid)),
            tags=frozenset(_norm_words(f.str_list(d, "tags", rid))),
            age_rating=age,
            kids=f.opt_bool(d, "kids", rid),
            adult=f.opt_bool(d, "adult", rid),
            paid=f.opt_bool(d, "paid", rid),
            licence_start=start,
            licence_end=end,
            device_rights=_device_set(f.str_list(d, "device_rights", rid), "device_rights", rid),
            boost=f.opt_bool(d, "boost", rid),
            series_id=series_id,
            season=season,
            episode=episode,
            editorial_flags=frozenset(_norm_words(f.str_list(d, "editorial_flags", rid))),
            duration_ms=f.opt_int(d, "duration_ms", rid, minimum=0) or 0,
            release_year=f.opt_int(d, "release_year", rid, minimum=1800),
            rating=f.opt_float(d, "rating", rid),
            updated_at=f.opt_datetime(d, "updated_at", rid),
        )


@dataclass(frozen=True, slots=True)
class ShelfRule:
    """Auto-shelf fill rule: genres/tags are any-of; empty means no constraint."""

    genres: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    min_year: int | None = None
    max_age_rating: int | None = None
    kids_only: bool = False
    sort: str = "POPULAR"
    limit: int = 100

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], rid: str | None = None) -> "ShelfRule":
        sort = (f.opt_str(d, "sort", rid) or "POPULAR").upper()
        if sort not in AUTO_SORTS:
            raise ShowcaseInputError("invalid_field", f"rule.sort must be one of {AUTO_SORTS}", field="rule.sort", record_id=rid)
        limit = f.opt_int(d, "limit", rid, minimum=1)
        return cls(
            genres=frozenset(_norm_words(f.str_list(d, "genres", rid))),
            tags=frozenset(_norm_words(f.str_list(d, "tags", rid))),
            min_year=f.opt_int(d, "min_year", rid),
            max_age_rating=f.opt_int(d, "max_age_rating", rid, minimum=0),
            kids_only=f.opt_bool(d, "kids_only", rid),
            sort=sort,
            limit=100 if limit is None else limit,
        )


@dataclass(frozen=True, slots=True)
class ShelfLink:
    """A super-shelf cover: COLLECTION -> shelf_id, TITLE -> item_id, WEB -> URL (unknown kinds are kept and dropped at assembly)."""

    kind: str
    target: str
    cover: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], rid: str | None = None) -> "ShelfLink":
        kind = f.req_str(d, "kind", rid).upper()
        return cls(kind=_LINK_ALIASES.get(kind, kind), target=f.req_str(d, "target", rid), cover=f.opt_str(d, "cover", rid) or "")


@dataclass(frozen=True, slots=True)
class ShelfDef:
    shelf_id: str
    kind: str
    title: str = ""
    template_slot: int | None = None
    device_types: frozenset[str] = frozenset()  # empty = every device
    min_app_version: str | None = None
    max_app_version: str | None = None
    item_ids: tuple[str, ...] = ()  # editorial picks, shown first
    rule: ShelfRule | None = None
    links: tuple[ShelfLink, ...] = ()
    kids: bool = False
    updated_at: datetime | None = None
    min_version_key: VersionKey | None = None
    max_version_key: VersionKey | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ShelfDef":
        rid = d.get("shelf_id") if isinstance(d, Mapping) and isinstance(d.get("shelf_id"), str) else None
        shelf_id = f.req_str(d, "shelf_id", rid)
        kind = f.req_str(d, "kind", rid).upper()
        if kind not in SHELF_KINDS:
            raise ShowcaseInputError("invalid_field", f"unknown shelf kind {kind!r}", field="kind", record_id=rid)
        rule_raw = d.get("rule")
        rule = ShelfRule.from_dict(rule_raw, rid) if rule_raw is not None else None
        if kind == "AUTO" and rule is None:
            raise ShowcaseInputError("auto_shelf_without_rule", "an AUTO shelf needs a rule", field="rule", record_id=rid)
        links_raw = d.get("links") or []
        if not isinstance(links_raw, (list, tuple)):
            raise ShowcaseInputError("invalid_field", "links must be a list", field="links", record_id=rid)
        min_v, max_v = f.opt_str(d, "min_app_version", rid), f.opt_str(d, "max_app_version", rid)
        min_key = parse_version(min_v, field="min_app_version") if min_v else None
        max_key = parse_version(max_v, field="max_app_version") if max_v else None
        if min_key is not None and max_key is not None and min_key > max_key:
            raise ShowcaseInputError(
                "invalid_field", "min_app_version is above max_app_version", field="min_app_version", record_id=rid
            )
        return cls(
            shelf_id=shelf_id,
            kind=kind,
            title=f.opt_str(d, "title", rid) or "",
            template_slot=f.opt_int(d, "template_slot", rid, minimum=1),
            device_types=_device_set(f.str_list(d, "device_types", rid), "device_types", rid),
            min_app_version=min_v or None,
            max_app_version=max_v or None,
            item_ids=tuple(dict.fromkeys(f.str_list(d, "item_ids", rid))),
            rule=rule,
            links=tuple(ShelfLink.from_dict(link, rid) for link in links_raw),
            kids=f.opt_bool(d, "kids", rid),
            updated_at=f.opt_datetime(d, "updated_at", rid),
            min_version_key=min_key,
            max_version_key=max_key,
        )


@dataclass(frozen=True, slots=True)
class Viewer:
    """The request context. ``age_limit`` is the request's limit (max age rating); ``is_kids`` = viewer under 16."""

    user_id: str | None
    device_type: str
    now: datetime
    app_version: str | None = None
    age_limit: int | None = None
    is_kids: bool = False
    app_version_key: VersionKey | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.device_type not in DEVICE_TYPES:
            raise ShowcaseInputError(
                "invalid_field", f"device_type must be one of {DEVICE_TYPES}, got {self.device_type!r}", field="device_type"
            )
        f.as_datetime(self.now, "now")
        if self.age_limit is not None and (isinstance(self.age_limit, bool) or not isinstance(self.age_limit, int) or self.age_limit < 0):
            raise ShowcaseInputError("invalid_field", f"age_limit must be a non-negative int, got {self.age_limit!r}", field="age_limit")
        if self.user_id is not None and (not isinstance(self.user_id, str) or not self.user_id):
            raise ShowcaseInputError("invalid_field", "user_id must be a non-empty string or null", field="user_id")
        if self.app_version:
            object.__setattr__(self, "app_version_key", parse_version(self.app_version))

    @property
    def is_guest(self) -> bool:
        return self.user_id is None

    @property
    def user_key(self) -> str:
        return self.user_id if self.user_id is not None else "guest"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Viewer":
        device = f.req_str(d, "device_type").upper()
        now = f.opt_datetime(d, "now")
        if now is None:
            raise ShowcaseInputError("missing_field", "field 'now' is required", field="now")
        return cls(
            user_id=f.opt_str(d, "user_id") or None,
            device_type=device,
            now=now,
            app_version=f.opt_str(d, "app_version") or None,
            age_limit=f.opt_int(d, "age_limit", minimum=0),
            is_kids=f.opt_bool(d, "is_kids"),
        )


@dataclass(frozen=True, slots=True)
class UserHistory:
    """What the user played. Lists are newest first; ``recent`` defaults to continue_watching + watched."""

    continue_watching: tuple[str, ...] = ()
    watched: tuple[str, ...] = ()
    recent: tuple[str, ...] = ()
    series_progress: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # series_id -> last (season, episode)
    favourite_channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.recent:
            object.__setattr__(self, "recent", tuple(dict.fromkeys(self.continue_watching + self.watched)))

    @property
    def is_empty(self) -> bool:
        return not (self.continue_watching or self.watched or self.recent or self.series_progress)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UserHistory":
        raw = d.get("series_progress") or {}
        if not isinstance(raw, Mapping):
            raise ShowcaseInputError("invalid_field", "series_progress must be a mapping", field="series_progress")
        progress: dict[str, tuple[int, int]] = {}
        for series_id, value in raw.items():
            if isinstance(value, Mapping):
                value = (value.get("season"), value.get("episode"))
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ):
                raise ShowcaseInputError(
                    "invalid_field", f"series_progress[{series_id!r}] must be (season, episode)", field="series_progress"
                )
            progress[str(series_id)] = (value[0], value[1])
        return cls(
            continue_watching=f.str_list(d, "continue_watching"),
            watched=f.str_list(d, "watched"),
            recent=f.str_list(d, "recent"),
            series_progress=progress,
            favourite_channels=f.str_list(d, "favourite_channels"),
        )


@dataclass(frozen=True, slots=True)
class Stats:
    popularity: Mapping[str, float] = field(default_factory=dict)  # e.g. views in the last N days
    ctr: Mapping[str, float] = field(default_factory=dict)  # clicks / impressions on the showcase

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Stats":
        out = {}
        for key in ("popularity", "ctr"):
            raw = d.get(key) or {}
            if not isinstance(raw, Mapping) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw.values()
            ):
                raise ShowcaseInputError("invalid_field", f"{key} must map item ids to numbers", field=key)
            out[key] = {str(k): float(v) for k, v in raw.items()}
        return cls(**out)


@dataclass(frozen=True, slots=True)
class Audience:
    """The request-independent part of the viewer that decides which titles are allowed (cache key)."""

    device_type: str
    guest: bool
    age_limit: int | None
    kids: bool
    drop_educational: bool

    @property
    def label(self) -> str:
        return "kids" if self.kids else ("guest" if self.guest else "adult")


@dataclass(frozen=True, slots=True)
class Alarm:
    code: str
    message: str
    severity: str = "warning"  # warning | critical
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DroppedShelf:
    shelf_id: str
    kind: str
    reason: str  # below_minimum | no_source | max_shelves


@dataclass(frozen=True, slots=True)
class Shelf:
    shelf_id: str
    kind: str
    title: str
    items: tuple[str, ...] = ()  # title ids (channel ids for FAVOURITE_CHANNELS)
    links: tuple[ShelfLink, ...] = ()  # SUPER_SHELF covers
    meta: Mapping[str, Any] = field(default_factory=dict)  # boosted, boost_off, editorial, slot


@dataclass(frozen=True, slots=True)
class Showcase:
    user_key: str
    device_type: str
    shelves: tuple[Shelf, ...]
    built_at: datetime
    version: int = 1  # per-user revision, set by the caller
    is_fallback: bool = False
    audience: str = "adult"  # adult | guest | kids
    fallback_reason: str | None = None
    alarms: tuple[Alarm, ...] = ()
    dropped: tuple[DroppedShelf, ...] = ()
