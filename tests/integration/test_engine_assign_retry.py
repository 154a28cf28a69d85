"""An engine processor's assignment reads its changelog again after a broker error (a changelog topic
created a moment before has no known leader yet): failing the rebalance listener left the partitions
assigned without state until the next rebalance (streams/runtime/engine/runner.py, seen in
tests/integration/test_worker_group.py when three workers started at once)."""
from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException


class Sessions:
    name = "test-sessions"

    def __init__(self) -> None:
        from streams.kafka.topics import spec
        self.sources = (spec("playback"),)


async def test_a_not_leader_answer_is_tried_again(monkeypatch):
    import streams.runtime.engine.runner as runner_module

    calls = []

    def read_changelog(settings, topic, partitions, known):  # noqa: ANN001, ANN202
        calls.append(list(partitions))
        if len(calls) == 1:
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return {p: [] for p in partitions}, {p: 0 for p in partitions}

    monkeypatch.setattr(runner_module, "read_changelog", read_changelog)
    runner = runner_module.Runner(Sessions())
    await runner.assign([0, 3])
    assert calls == [[0, 3], [0, 3]]
    assert sorted(runner.stores) == [0, 3]
