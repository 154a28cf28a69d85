"""Event builders for the coview tests (decoded-Avro-shaped dicts)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

T0 = datetime(2024, 5, 1, 20, 0, tzinfo=timezone.utc)
T0_MS = round(T0.timestamp() * 1000)
S = 1000  # ms per second
MIN = 60 * S


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def playback(item: str, t: float, pos: float, kind: str = "HEARTBEAT", duration: float = 7200,
             user: str | None = "u1", device: str = "dev1", session: str = "c1", event_id: str | None = None) -> dict:
    """A playback event; t, pos and duration in seconds."""
    return {
        "event_id": event_id or f"{item}-{kind}-{t}-{pos}",
        "session_id": session, "user_id": user, "device_id": device, "device_type": "TV",
        "os": "tizen 7", "app_version": "3.1.0", "item_id": item, "event_type": kind,
        "position_ms": round(pos * S), "duration_ms": round(duration * S),
        "network_kbps": 20000, "buffered_ratio": 0.5, "stall_ms": 0, "bitrate_kbps": 6000,
        "event_time": at(t),
    }


def session_event(kind: str, t: float, user: str | None = "u1", device: str = "dev1", session: str = "c1",
                  reason: str | None = "EXPLICIT") -> dict:
    return {"session_id": session, "user_id": user, "device_id": device, "device_type": "TV",
            "kind": kind, "end_reason": reason if kind == "END" else None, "event_time": at(t)}


def watch(item: str, t: float, seconds: float = 150, duration: float = 7200, **kw) -> list[dict]:
    """START at t and a HEARTBEAT `seconds` later: a view by the default rule when seconds >= 120."""
    return [playback(item, t, 0, "START", duration, **kw), playback(item, t + seconds, seconds, "HEARTBEAT", duration, **kw)]


def reference_counts(events: list[dict]) -> dict[str, float]:
    """Per-title co-view counts (value at time 0) of the pure core over ``events`` in order: what the
    engine must end with, nothing lost and nothing applied twice."""
    from processors.coview.memory import CoviewIndex, SessionStore
    from processors.coview.sessionize import ViewCompleted
    from streams.agents.coview import COVIEW_CONFIG, SESSION_CONFIG

    sessions, index = SessionStore(SESSION_CONFIG), CoviewIndex(COVIEW_CONFIG)
    for event in events:
        for record in sessions.feed(event):
            if type(record) is ViewCompleted:
                index.add_view(record)
    return {title: state["n"] * 2.0 ** ((state["L"] - 0) / COVIEW_CONFIG.half_life_ms)
            for title, state in index.titles.items() if state["n"] > 0}


def stored_counts(client, prefix: str) -> dict[str, float]:
    """The engine's per-title co-view counts in Redis (``<prefix>coview-counts``), as values at time 0."""
    from streams.agents.coview import COVIEW_CONFIG

    raw = client.hgetall(f"{prefix}coview-counts")
    counts = {}
    for title, value in raw.items():
        n, landmark = value.split("|")
        counts[title] = float(n) * 2.0 ** (int(landmark) / COVIEW_CONFIG.half_life_ms)  # value at time 0
    return {title: n for title, n in counts.items() if n > 0}


# -- whole co-view runs on a private stack (tests/faults/) --------------------------------------------

COVIEW_AGENTS = "coview,catalogue"  # the co-view engine and the catalogue its cold-start blend reads


def run_namespace(settings, tag: str):
    """Settings of one run with topics, consumer groups and views of its own: every run reads the same
    input published into its own topics (``VITRINA_TOPIC_PREFIX``), paced while its workers run."""
    import dataclasses
    import uuid

    from streams.kafka.topics import ensure_topics

    name = f"{tag}-{uuid.uuid4().hex[:6]}"
    run = dataclasses.replace(settings, topic_prefix=f"{name}.", app_id=name)
    ensure_topics(run)
    return run, f"{name}:"


def coview_env(prefix: str, **extra: str) -> dict[str, str]:
    # small batches and frequent checkpoints: a fault lands with work in flight at every stage
    return {"VITRINA_AGENTS": COVIEW_AGENTS, "VITRINA_VIEW_PREFIX": prefix, "VITRINA_ENGINE_MAX_RECORDS": "200",
            "VITRINA_ENGINE_COMMIT_S": "0.5", "VITRINA_COVIEW_TITLES_COMMIT_S": "1", **extra}


class PacedPublisher:
    """Publishes the catalogue, then the playback events in chunks with pauses (a live stream), in a
    thread; ``hold()``/``go()`` pause it around a broker outage."""

    def __init__(self, settings, titles: list[dict], playback: list[dict], chunk: int = 150,
                 pause_s: float = 0.1) -> None:
        import threading

        self.settings, self.titles, self.playback = settings, titles, playback
        self.chunk, self.pause_s = chunk, pause_s
        self.sent = 0
        self.running = threading.Event()
        self.running.set()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "PacedPublisher":
        self.thread.start()
        return self

    def hold(self) -> None:
        self.running.clear()

    def go(self) -> None:
        self.running.set()

    def _run(self) -> None:
        import time

        from streams.kafka.producer import EventProducer
        from streams.kafka.topics import spec

        try:
            producer = EventProducer(self.settings)
            producer.publish_many(spec("catalogue.titles"), self.titles)
            producer.flush()
            for start in range(0, len(self.playback), self.chunk):
                self.running.wait()
                producer.publish_many(spec("playback"), self.playback[start:start + self.chunk])
                producer.flush(120)
                self.sent = min(len(self.playback), start + self.chunk)
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, timeout_s: float = 180.0) -> None:
        self.running.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error


def coview_snapshot(client, prefix: str) -> dict:
    """What a co-view run leaves in Redis: the counts hash as written, and every similar list without its
    ``version`` (a write counter: how often a list was rewritten depends on batching, like a showcase's)."""
    import json

    similar = {}
    for key in client.scan_iter(match=f"{prefix}similar:*", count=1000):
        view = json.loads(client.get(key))
        view.pop("version", None)
        similar[key[len(prefix):]] = view
    return {"counts": client.hgetall(f"{prefix}coview-counts"), "similar": similar}


def reference_state(events: list[dict]) -> dict[str, str]:
    """The counts hash the engine must end with: the pure core over ``events`` in order, formatted as the
    engine writes it (``sinks/similar_views.queue_counts``)."""
    from processors.coview.memory import CoviewIndex, SessionStore
    from processors.coview.sessionize import ViewCompleted
    from streams.agents.coview import COVIEW_CONFIG, SESSION_CONFIG

    sessions, index = SessionStore(SESSION_CONFIG), CoviewIndex(COVIEW_CONFIG)
    for event in events:
        for record in sessions.feed(event):
            if type(record) is ViewCompleted:
                index.add_view(record)
    return {title: f"{state['n']!r}|{state['L']}" for title, state in index.titles.items()}  # queue_counts' format


def snapshot_differences(expected: dict, got: dict, limit: int = 6) -> list[str]:
    out = []
    for part in ("counts", "similar"):
        want, have = expected[part], got[part]
        out += [f"{part}: missing {k}" for k in sorted(set(want) - set(have))][:limit]
        out += [f"{part}: extra {k}" for k in sorted(set(have) - set(want))][:limit]
        out += [f"{part}: {k}: {_differing(want[k], have[k])}"
                for k in sorted(set(want) & set(have)) if want[k] != have[k]][:limit]
    return out


def _differing(want, have) -> str:
    """Two values that differ, shortened: for dicts only the fields that differ."""
    if isinstance(want, dict) and isinstance(have, dict):
        fields = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        return "; ".join(f"{k}: {str(want.get(k))[:200]} != {str(have.get(k))[:200]}" for k in fields)
    return f"{str(want)[:240]} != {str(have)[:240]}"


def wait_for_counts(client, prefix: str, expected: dict[str, str], timeout_s: float = 150.0,
                    check=None) -> float:
    """Wait until the counts hash equals ``expected``; seconds waited. On a timeout the error says how it differs.
    ``check()``, if given, runs at every poll and may raise to stop waiting (e.g. a worker died)."""
    import time

    started = time.monotonic()
    while True:
        if check is not None:
            check()
        got = client.hgetall(f"{prefix}coview-counts")
        if got == expected:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            wrong = {t: (got.get(t), want) for t, want in expected.items() if got.get(t) != want}
            raise AssertionError(f"counts not exact after {timeout_s}s: {len(wrong)} of {len(expected)} titles "
                                 f"differ (got, expected), e.g. {list(wrong.items())[:6]}; extra {set(got) - set(expected)}")
        time.sleep(0.25)
