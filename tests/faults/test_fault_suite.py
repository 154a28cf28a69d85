"""The fault suite (issue 18): per fault, the views of a run with the fault injected equal those of an
uninterrupted run on the same input - co-view and showcases included, nothing rebuilt from the final
inputs before comparing - and no input event loses its effect.

The harness is bench/faults.py (``FaultSuite``); here it runs at a small size on a private stack of
this module, with ONE reference run shared by every fault. Each fault waits at most ``TIMEOUT_S`` for
its views to equal the reference; a failure prints the differing keys by family and a few of them.
"""
from __future__ import annotations

import pytest
from support.replay import start_private_stack

from bench.faults import FAULTS, FaultSuite, make_input

EVENTS = 800
TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    stack, settings = start_private_stack(tmp_path_factory.mktemp("fault-suite"))
    harness = FaultSuite(stack, settings, make_input(EVENTS), tmp_path_factory.mktemp("fault-runs"),
                         timeout_s=TIMEOUT_S, stable_s=6.0, say=print)
    try:
        harness.run_reference()
        yield harness
    finally:
        harness.close()
        stack.down()


# Every fault gates CI. The early worker kill -9 lost a few plays in 1 of 4 runs while the play counter
# was a Faust agent with a RocksDB-backed table; since plays run as engine processors (state restored
# from the changelog only, offsets committed after every output is acknowledged) it passed 4 of 4.
CASES = list(FAULTS)


@pytest.mark.parametrize("fault", CASES)
def test_views_after_the_fault_equal_an_uninterrupted_run(suite, fault):
    result = suite.run(fault)
    report = (f"{fault}: lost {result.lost} {result.lost_detail}, {result.views_differing} view key(s) differ "
              f"{result.differing_by_family}, converge_s {result.converge_s}, notes {result.notes}\n"
              + "\n".join(result.differing))
    print(report)
    assert result.lost == 0, report
    assert result.views_differing == 0, report
    assert result.converge_s is not None, report
