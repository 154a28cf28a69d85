"""Polling with a deadline for results of asynchronous processing (never sleep-and-assert)."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(predicate: Callable[[], Any], what: str = "condition", timeout_s: float = 120.0,
             poll_s: float = 0.3) -> Any:
    """Return the first truthy value of ``predicate()``; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
