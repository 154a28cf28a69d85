"""How often the co-view title stage writes its lists (streams/agents/coview.py ``Flusher.due``): every
VITRINA_COVIEW_FLUSH_S normally, every VITRINA_COVIEW_CATCHUP_FLUSH_S while an engine processor of the
worker has a backlog (its last fetch was full). Pure, no stack."""
from __future__ import annotations

import time
from types import SimpleNamespace

from streams.agents import coview as agent
from streams.runtime.engine import service


def test_lists_are_written_less_often_while_a_coview_stage_catches_up():
    behind = [False]
    flusher = agent.Flusher(catching_up=lambda: behind[0])
    flusher.last_flush = time.monotonic() - agent.FLUSH_INTERVAL_S - 0.05
    assert not flusher.due()  # nothing dirty, nothing to write
    flusher.mark("a", 0)
    assert flusher.due()
    behind[0] = True
    assert agent.CATCHUP_FLUSH_S > agent.FLUSH_INTERVAL_S + 0.5
    assert not flusher.due()
    flusher.last_flush = time.monotonic() - agent.CATCHUP_FLUSH_S - 0.05
    assert flusher.due()


def test_the_worker_s_flusher_asks_every_runner_of_the_worker(monkeypatch):
    """The processors of a worker share one thread: any of them behind is a catch-up for the lists."""
    runners = [SimpleNamespace(name="play-counter", backlog=False), SimpleNamespace(name=agent.TITLES_AGENT, backlog=False)]
    monkeypatch.setattr(service, "_running", runners)
    assert not agent.flusher.catching_up()
    runners[0].backlog = True
    assert agent.flusher.catching_up()
    runners[0].backlog = False
    runners[1].backlog = True
    assert agent.flusher.catching_up()
