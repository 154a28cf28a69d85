"""Snapshots of every Redis view of one namespace, and their differences: what the fault suite
(bench/faults.py, tests/faults/) and the replay/crash tests (tests/support/replay.py) compare.

A snapshot maps every key under a view prefix (without the prefix) to a comparable value: JSON
parsed, hashes as dicts, sorted sets/sets sorted. Only these parts are left out, each because it is
bookkeeping of HOW the views were produced, not what they say (everything else must be equal between
two runs on the same input, faults or not):

* ``vitrina:showcase:*`` JSON: ``version`` and ``meta.version``: a per-key write counter (monotonic, it
  guards racing writers); how many writes a view took depends on how builds and batches interleaved.
* ``vitrina:similar:*`` JSON: ``version``, the same kind of per-title write counter (clients use it to
  see that a list changed): a list is rewritten whenever its counts or its neighbours' counts move, so
  how many rewrites it took depends on batching; its items, scores, support and source are compared.
* ``vitrina:showcase-meta:*`` hash: ``version`` (the same counter), ``decision`` (why the last build
  wrote or kept the view: first_build / forced / restamped / unchanged... depends on how many builds
  there were) and ``decided_at`` (wall clock of that decision, for ops).
* ``vitrina:catalogue:version`` hash: counters bumped once per catalogue batch (batching).
* ``vitrina:showcase-dirty`` / ``vitrina:showcase-force``: the builder's work queue (empty at rest).
* ``vitrina:showcase-settled``: the builder's settled-pass bookkeeping (a generation counter, a count
  of builds, a lock).

``built_at`` of showcases is compared: it is the event-time clock of the inputs (streams/capabilities/showcase/builder.py).
"""
from __future__ import annotations

import json
from typing import Any

IGNORED_JSON_FIELDS: dict[str, tuple[Any, str | None]] = {"showcase": ({"meta": ("version",)}, "version"),
                                                           "similar": ((), "version")}
IGNORED_HASH_FIELDS: dict[str, set[str]] = {"showcase-meta": {"decided_at", "version", "decision"},
                                            "catalogue": {"titles", "shelves"}}
IGNORED_FAMILIES = {"showcase-dirty", "showcase-force", "showcase-settled"}


def family(suffix: str) -> str:
    """The view family of a key without its prefix: the part up to the first ':' (``plays``, ``history``...)."""
    return suffix.split(":", 1)[0]


def _strip(document: Any, nested: Any, top: str | None) -> Any:
    if not isinstance(document, dict):
        return document
    document = {k: v for k, v in document.items() if k != top}
    for field, names in dict(nested).items():
        if isinstance(document.get(field), dict):
            document[field] = {k: v for k, v in document[field].items() if k not in names}
    return document


def snapshot(client: Any, prefix: str = "vitrina:") -> dict[str, Any]:
    """Every view key under ``prefix`` (without it) -> comparable value (ignored fields removed).
    ``client``: a synchronous redis client with ``decode_responses=True``."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=prefix + "*", count=1000):
        suffix = key[len(prefix):]
        fam = family(suffix)
        if fam in IGNORED_FAMILIES:
            continue
        kind = client.type(key)
        if kind == "string":
            raw = client.get(key)
            try:
                value: Any = json.loads(raw)
            except (TypeError, ValueError):
                value = raw
            if fam in IGNORED_JSON_FIELDS:
                nested, top = IGNORED_JSON_FIELDS[fam]
                value = _strip(value, nested, top)
        elif kind == "hash":
            value = {k: v for k, v in client.hgetall(key).items() if k not in IGNORED_HASH_FIELDS.get(fam, ())}
        elif kind == "zset":
            value = sorted(client.zrange(key, 0, -1, withscores=True))
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            continue
        out[suffix] = value
    return out


def differing_keys(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every key missing, extra or with another value, sorted."""
    return sorted(k for k in set(expected) | set(actual)
                  if k not in expected or k not in actual or expected[k] != actual[k])


def without_field(views: dict[str, Any], fam: str, name: str) -> dict[str, Any]:
    """``views`` with top-level JSON field ``name`` removed from the keys of family ``fam`` (a diagnosis:
    do two snapshots differ by anything else than that field?)."""
    return {k: ({f: x for f, x in v.items() if f != name} if family(k) == fam and isinstance(v, dict) else v)
            for k, v in views.items()}


def differences(expected: dict[str, Any], actual: dict[str, Any], limit: int = 10) -> list[str]:
    """Readable lines for the differing keys (at most ``limit`` of each kind)."""
    out = [f"missing {k}" for k in sorted(set(expected) - set(actual))][:limit]
    out += [f"extra {k}" for k in sorted(set(actual) - set(expected))][:limit]
    out += [f"differs {k}: {json.dumps(expected[k], default=str)[:300]} != {json.dumps(actual[k], default=str)[:300]}"
            for k in sorted(set(expected) & set(actual)) if expected[k] != actual[k]][:limit]
    return out


def by_family(keys: list[str]) -> dict[str, int]:
    """How many of ``keys`` fall in each view family."""
    counts: dict[str, int] = {}
    for key in keys:
        counts[family(key)] = counts.get(family(key), 0) + 1
    return dict(sorted(counts.items()))
