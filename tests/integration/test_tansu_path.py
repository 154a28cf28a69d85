"""The light broker option still works: the broker-sensitive tests, run again on Tansu.

Apache Kafka is the default broker and the whole suite runs on it. Tansu (``VITRINA_BROKER=tansu``)
stays as the option for machines without Java, and its workarounds (``streams/kafka/tansu_compat.py``,
switched on by ``streams/kafka/broker_capabilities.py``) are only exercised on Tansu, so the tests that
depend on what a broker answers (the stack, produce/consume, offsets and timestamp look-ups,
replay, crash safety) run a second time here against a Tansu stack of their own: a child pytest
with ``VITRINA_BROKER=tansu`` and no other inherited ``VITRINA_*`` setting.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKER_SENSITIVE = [
    "tests/integration/test_stack.py",
    "tests/integration/test_produce_consume.py",
    "tests/integration/test_ops.py",
    # the two-phase rebuild (catalogue first, then the rest, under one replay group): Tansu still lists the
    # first phase's member when the second phase sets its offsets, so there they are committed by a member
    # of the group (streams/ops/group_offsets.py: reset_exited_group)
    "tests/integration/test_replay.py",
    "tests/integration/test_crash_safety.py",
]


@pytest.mark.slow
def test_broker_sensitive_tests_pass_on_tansu(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINA_")}
    env["VITRINA_BROKER"] = "tansu"
    env["VITRINA_DATA_DIR"] = str(tmp_path / "unused")  # every module starts its own stack anyway
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
         *BROKER_SENSITIVE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-60:])
    assert run.returncode == 0, f"the broker-sensitive tests failed on Tansu:\n{tail}"
    assert " passed" in run.stdout and "skipped" not in run.stdout.split("\n")[-2], tail
