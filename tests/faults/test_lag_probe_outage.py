"""The worker's lag probe survives a broker kill -9.

Every worker measures consumer lag in a thread (streams/ops/lag.py) every ``VITRINA_LAG_EVERY_S``, through
broker outages too. It used librdkafka's admin client (DescribeConsumerGroups, ListConsumerGroupOffsets),
whose coordinator requests abort the whole process when the broker goes away with one in flight
(``rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0 failed``, confluentinc/librdkafka#4605):
a co-view worker died that way during the broker fault. Here a child process runs ``group_lag`` in a
tight loop on several threads (many requests in flight) while the broker is killed and restarted; it
must still be alive, and measuring again, afterwards. With the admin path it aborted at the first kill.
"""
from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.replay import start_private_stack, wait_for
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
GROUP = "lag-probe-group"
PROBE = """
import pickle, sys, threading, time
from streams.ops.lag import group_lag
settings = pickle.loads(bytes.fromhex(sys.argv[1]))
measured = [0]
def loop():
    while True:
        try:
            rows = group_lag(settings, sys.argv[2], ["playback"], None, False, {})
            assert rows and rows[0].committed == 5, rows
            measured[0] += 1
        except Exception:  # a broker away: errors are fine, an abort is not
            time.sleep(0.01)
for _ in range(8):
    threading.Thread(target=loop, daemon=True).start()
while True:
    time.sleep(0.2)
    print(measured[0], flush=True)
"""


@pytest.fixture()
def stack(tmp_path):
    stack, settings = start_private_stack(tmp_path / "stack")
    try:
        yield stack, settings
    finally:
        stack.down()


def test_lag_probe_rides_out_a_broker_kill(stack, tmp_path):
    from streams.kafka.topics import full_name

    embedded, settings = stack
    committer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": GROUP,
                          "enable.auto.commit": False})
    try:
        committer.commit(offsets=[TopicPartition(full_name(settings, "playback"), 0, 5)], asynchronous=False)
    finally:
        committer.close()
    out = (tmp_path / "probe.out").open("w")
    probe = subprocess.Popen([sys.executable, "-c", PROBE, pickle.dumps(settings).hex(), GROUP], cwd=ROOT,
                             stdout=out, stderr=subprocess.STDOUT)

    def measured() -> int:
        lines = (tmp_path / "probe.out").read_text(errors="replace").split()
        numbers = [int(word) for word in lines if word.isdigit()]
        return numbers[-1] if numbers else 0

    try:
        wait_for(lambda: measured() > 20, "the probe measuring", 60)
        embedded.kill_component("broker")
        time.sleep(3)
        assert probe.poll() is None, f"the probe died while the broker was down:\n{_tail(tmp_path)}"
        assert embedded.restart_component("broker").healthy
        before = measured()
        wait_for(lambda: probe.poll() is not None or measured() > before + 20, "measuring again", 60)
        assert probe.poll() is None, f"the probe died:\n{_tail(tmp_path)}"
    finally:
        if probe.poll() is None:
            probe.kill()
        probe.wait()
        out.close()


def _tail(tmp_path: Path) -> str:
    lines = (tmp_path / "probe.out").read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines[-400:] if not line.startswith("%"))[-3000:]
