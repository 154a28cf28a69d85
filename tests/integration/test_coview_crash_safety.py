"""Co-view engine crash safety: a worker killed with SIGKILL mid-stream and restarted ends with exactly
the per-title co-view counts of the pure core run over the same events (nothing lost, nothing applied
twice): the state comes back from the changelog, its applied markers skip what was already folded in,
and re-sent contributions are dropped by their origin offsets.

Input: MovieLens ratings as START + COMPLETE playback pairs (../shared/data, the co-view-heaviest input).
"""
from __future__ import annotations

import pytest
import redis

from support.coview import reference_counts, stored_counts
from support.replay import quiet, start_pipeline_worker, start_private_stack, unique, wait_for

pytestmark = pytest.mark.slow
EVENTS = 40_000


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    stack, settings = start_private_stack(tmp_path_factory.mktemp("coview-crash-stack"))
    try:
        yield settings
    finally:
        stack.down()


def movielens_events(limit: int) -> list[dict]:
    from demo.stage_coview import movielens_playback
    return movielens_playback(limit)


def test_kill_9_mid_stream_then_restart_gives_exact_coview_counts(private, tmp_path):
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec

    events = movielens_events(EVENTS)
    expected = reference_counts(events)
    producer = EventProducer(private)
    producer.publish_many(spec("playback"), events)
    producer.flush()  # an unflushed producer outlives the stack (its delivery callbacks hold it) and logs refusals
    del producer

    app_id, prefix = unique("coview-crash"), f"{unique('coview-crash')}:"
    client = redis.Redis.from_url(private.redis_url, decode_responses=True)
    env = dict(VITRINA_AGENTS="coview", VITRINA_VIEW_PREFIX=prefix, VITRINA_ENGINE_MAX_RECORDS="500",
               VITRINA_ENGINE_COMMIT_S="0.5")
    worker = start_pipeline_worker(private, app_id, data_dir=tmp_path / "w1", name=f"{app_id}-1", **env)
    def mid_stream() -> bool:  # state checkpointed at least once and the title stage applying updates
        return (worker.counter("vitrina_engine_checkpoints_total", processor="coview-sessions") > 0
                and worker.counter("vitrina_coview_updates_total") > 0)

    wait_for(mid_stream, "the sessionizer's first checkpoint and the first title updates", 180, every_s=0.05)
    worker.kill()
    seen = client.hlen(f"{prefix}coview-counts")
    assert seen < len(expected), "killed mid-stream: some titles were not counted yet"

    worker = start_pipeline_worker(private, app_id, data_dir=tmp_path / "w2", name=f"{app_id}-2", **env)
    try:
        wait_for(lambda: len(stored_counts(client, prefix)) >= len(expected), "every title counted", 300)
        quiet(worker)
        restored = worker.counter("vitrina_engine_restored_records_total", processor="coview-sessions")
        redelivered = worker.counter("vitrina_engine_redelivered_total", processor="coview-sessions")
    finally:
        worker.stop()
    got = stored_counts(client, prefix)
    assert got.keys() == expected.keys()
    wrong = {t: (got[t], expected[t]) for t in expected if got[t] != pytest.approx(expected[t], rel=1e-9)}
    assert not wrong, f"{len(wrong)} titles differ, e.g. {list(wrong.items())[:5]}"
    assert restored > 0, "the restarted worker restored session state from the changelog"
    print(f"restored {restored:.0f} changelog records, skipped {redelivered:.0f} redelivered records")
