"""The light broker option still works: the broker-sensitive tests, run again on Tansu.

Apache Kafka is the default broker and the whole suite runs on it. Tansu (``VITRINA_BROKER=tansu``)
stays as the option for machines without Java, and its workarounds (``streams/kafka/tansu_compat.py``,
switched on by ``streams/kafka/broker_capabilities.py``) are only exercised on Tansu, so the tests that
depend on what a broker answers (the stack, produce/consume, offsets and timestamp look-ups,
replay, crash safety: ``support.tansu_run.BROKER_SENSITIVE``) run a second time against a Tansu stack
of their own: a child pytest with ``VITRINA_BROKER=tansu`` and no other inherited ``VITRINA_*`` setting.
In a whole-suite run the child starts in the background at the first unit test and this test, moved
to the end, checks its result (tests/conftest.py, support/tansu_run.py).
"""
from __future__ import annotations

import pytest

from support import tansu_run


@pytest.mark.slow
def test_broker_sensitive_tests_pass_on_tansu() -> None:
    run = tansu_run.start()  # already running when the whole suite runs
    code, output = run.wait()
    tail = "\n".join(output.splitlines()[-60:])
    assert code == 0, f"the broker-sensitive tests failed on Tansu (output: {run.output}):\n{tail}"
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, tail
    tansu_run.discard(run)
