"""Semver-ish app version comparison for shelf targeting.

Accepted: ``1``, ``1.2``, ``1.2.3``, ``v2.10.0``, ``3.1.0-beta.2``, ``3.1.0+build.7`` (build metadata ignored).
Trailing zero components do not matter (``1.2`` == ``1.2.0``); a pre-release sorts before its release
(``3.1.0-beta`` < ``3.1.0``); pre-release identifiers compare numerically when numeric, numeric < alphanumeric.
"""
from __future__ import annotations

import re

from .errors import ShowcaseInputError

VersionKey = tuple[tuple[int, ...], int, tuple[tuple[int, int | str], ...]]

_VERSION_RE = re.compile(r"[vV]?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def parse_version(text: str, *, field: str = "app_version") -> VersionKey:
    if not isinstance(text, str):
        raise ShowcaseInputError("invalid_version", f"{field} must be a string, got {text!r}", field=field)
    match = _VERSION_RE.fullmatch(text.strip())
    if match is None:
        raise ShowcaseInputError("invalid_version", f"{field} {text!r} is not a version like 1.2.3", field=field)
    numbers = [int(part) for part in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    pre = match.group(2)
    if pre is None:
        return tuple(numbers), 1, ()
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return tuple(numbers), 0, ids


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 like a classic cmp."""
    ka, kb = parse_version(a), parse_version(b)
    return (ka > kb) - (ka < kb)


def version_in_range(app: VersionKey | None, minimum: VersionKey | None, maximum: VersionKey | None) -> bool:
    """Inclusive on both ends. An unknown client version only matches shelves without version bounds."""
    if minimum is None and maximum is None:
        return True
    if app is None:
        return False
    if minimum is not None and app < minimum:
        return False
    if maximum is not None and app > maximum:
        return False
    return True
