"""The four GRF ranking tasks, in the fixed column order used everywhere."""

from __future__ import annotations

TASKS: tuple[str, ...] = ("evr", "lvr", "svr", "fpr")
"""effective view, long view, short view (< 3 s), finished play."""
