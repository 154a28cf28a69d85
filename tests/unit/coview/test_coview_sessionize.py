from __future__ import annotations

import copy
import json
from datetime import datetime

import pytest

from processors.coview.sessionize import (
    Rejected,
    SessionClosed,
    SessionConfig,
    ViewCompleted,
    apply,
    close_idle,
    sessionizer_key,
)
from support.coview import MIN, S, T0_MS, playback, session_event, watch


def run(events, state=None, config=SessionConfig()):
    emitted = []
    for event in events:
        state, out = apply(state, event, config)
        emitted.extend(out)
    return state, emitted


def views(emitted):
    return [e for e in emitted if isinstance(e, ViewCompleted)]


def closed(emitted):
    return [e for e in emitted if isinstance(e, SessionClosed)]


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize(
    "second_start, same_session",
    [
        (150 + 29 * 60, True),       # 29 min after the last event
        (150 + 30 * 60, True),       # exactly the gap: still the same session
        (150 + 30 * 60 + 1, False),  # one second more: a new session
        (150 + 3 * 3600, False),
    ],
)
def test_session_splits_on_inactivity_gap(second_start, same_session):
    state, out = run(watch("a", 0) + watch("b", second_start))
    seen = views(out)
    assert [v.item_id for v in seen] == ["a", "b"]
    assert (seen[0].session_id == seen[1].session_id) is same_session
    if same_session:
        assert closed(out) == []
        assert seen[1].position_in_session == 2 and seen[1].previous == ("a",)
    else:
        [end] = closed(out)
        assert end == SessionClosed("u:u1", seen[0].session_id, T0_MS, T0_MS + 150 * S, 1, "gap")
        assert seen[1].position_in_session == 1 and seen[1].previous == ()


def test_explicit_end_closes_session_and_late_events_of_it_are_dropped():
    state, out = run(watch("a", 0) + [session_event("END", 200)])
    [end] = closed(out)
    assert end.reason == "end" and end.views == 1 and end.ended_ms == T0_MS + 150 * S
    assert state["sid"] is None
    state, late = apply(state, playback("a", 160, 160))
    assert [r.code for r in late] == ["ended_session"]
    # a new client session of the same viewer opens a new session
    state, out = run(watch("b", 400, session="c2"), state)
    [view] = views(out)
    assert view.position_in_session == 1 and view.session_id != end.session_id


def test_end_from_another_device_does_not_cut_the_session():
    events = watch("a", 0, session="tv") + watch("b", 10, session="phone", device="dev2")
    state, out = run(events + [session_event("END", 200, session="phone", device="dev2")])
    assert closed(out) == []
    state, out = run(watch("c", 300, session="tv") + [session_event("END", 500, session="tv")], state)
    [view] = views(out)
    assert view.previous == ("b", "a")
    [end] = closed(out)
    assert end.reason == "end" and end.views == 3


def test_close_idle_uses_the_given_time_only():
    state, _ = run(watch("a", 0))
    last = T0_MS + 150 * S
    same, out = close_idle(state, last + 30 * MIN)
    assert same is state and out == []
    gone, out = close_idle(state, last + 30 * MIN + 1)
    assert gone is None
    assert out == [SessionClosed("u:u1", state["sid"], T0_MS, last, 1, "idle")]


def test_session_start_event_registers_client_and_does_not_open_a_session():
    state, out = apply(None, session_event("START", 0))
    assert state is None and out == []


# --------------------------------------------------------------------------- the viewed rule

# (name, duration s, [(t s, position s, kind)], viewed?, watched ms when viewed or at the end)
VIEW_RULE_CASES = [
    ("short clip, 2 s of 4 s is under 3 s", 4, [(0, 0, "START"), (2, 2, "COMPLETE")], False, 2000),
    ("3 s of a 10 s clip is 30%", 10, [(0, 0, "START"), (3, 3, "HEARTBEAT")], True, 3000),
    ("2 min of a 2 h film", 7200, [(0, 0, "START"), (120, 120, "HEARTBEAT")], True, 120_000),
    ("119 s of a 2 h film", 7200, [(0, 0, "START"), (119, 119, "STOP")], False, 119_000),
    ("25% of a 5 min episode", 300, [(0, 0, "START"), (75, 75, "HEARTBEAT")], True, 75_000),
    ("24% of a 5 min episode", 300, [(0, 0, "START"), (72, 72, "HEARTBEAT")], False, 72_000),
    ("unknown duration needs 120 s", 0, [(0, 0, "START"), (60, 60, "HEARTBEAT")], False, 60_000),
    ("unknown duration, 120 s", 0, [(0, 0, "START"), (120, 120, "HEARTBEAT")], True, 120_000),
    # forward seek: only elapsed time (x max_playback_rate 2) is credited, not the jump
    ("seek to the end is not watching", 7200,
     [(0, 0, "START"), (5, 7000, "SEEK"), (10, 7005, "HEARTBEAT"), (15, 7010, "COMPLETE")], False, 20_000),
    # pause: the position does not move, nothing is credited while paused
    ("pause credits nothing", 7200,
     [(0, 0, "START"), (60, 60, "PAUSE"), (1200, 60, "RESUME"), (1230, 90, "HEARTBEAT")], False, 90_000),
    # backward seek: the replayed part counts again as it plays
    ("rewatching counts", 7200,
     [(0, 0, "START"), (60, 60, "HEARTBEAT"), (61, 0, "SEEK"), (131, 70, "HEARTBEAT")], True, 130_000),
    # out of order: 0, 60, 30, 120 -> the late 30 s heartbeat adds nothing
    ("late heartbeat inside the interval", 7200,
     [(0, 0, "START"), (60, 60, "HEARTBEAT"), (30, 30, "HEARTBEAT"), (100, 100, "HEARTBEAT")], False, 100_000),
    # out of order: the START arrives after a heartbeat and extends the interval backwards
    ("late start extends backwards", 7200,
     [(70, 70, "HEARTBEAT"), (130, 130, "HEARTBEAT"), (0, 0, "START")], True, 130_000),
    ("duplicate events are not double counted", 7200,
     [(0, 0, "START"), (60, 60, "HEARTBEAT"), (60, 60, "HEARTBEAT"), (100, 100, "HEARTBEAT"),
      (100, 100, "HEARTBEAT")], False, 100_000),
    # STOP then START later in the session: watched time adds up, the gap between is not credited
    ("two playbacks add up", 7200,
     [(0, 0, "START"), (70, 70, "STOP"), (600, 70, "START"), (660, 130, "HEARTBEAT")], True, 130_000),
]


@pytest.mark.parametrize("name, duration, steps, viewed, watched_ms", VIEW_RULE_CASES, ids=[c[0] for c in VIEW_RULE_CASES])
def test_viewed_rule(name, duration, steps, viewed, watched_ms):
    events = [playback("m", t, pos, kind, duration) for t, pos, kind in steps]
    state, out = run(events)
    got = views(out)
    if viewed:
        assert len(got) == 1
        assert got[0].watched_ms == watched_ms
        assert got[0].duration_ms == duration * S
    else:
        assert got == []
        assert state["plays"]["m"][4] == watched_ms


def test_short_view_threshold_is_configurable():
    events = [playback("m", 0, 0, "START", 4), playback("m", 2, 2, "HEARTBEAT", 4)]
    _, out = run(events, config=SessionConfig(short_view_ms=2000))
    assert len(views(out)) == 1


def test_a_title_counts_once_per_session_and_positions_follow_views():
    events = watch("a", 0) + watch("b", 200) + watch("a", 400) + watch("c", 600)
    _, out = run(events)
    got = views(out)
    assert [(v.item_id, v.position_in_session, v.previous) for v in got] == [
        ("a", 1, ()), ("b", 2, ("a",)), ("c", 3, ("b", "a"))]


def test_previous_is_bounded_by_recent_views():
    events = []
    for i in range(6):
        events += watch(f"m{i}", i * 200)
    _, out = run(events, config=SessionConfig(recent_views=3))
    assert views(out)[-1].previous == ("m4", "m3", "m2")


def test_open_plays_are_bounded():
    config = SessionConfig(max_open_plays=3)
    events = [playback(f"m{i}", i, 0, "START") for i in range(10)]
    state, _ = run(events, config=config)
    assert sorted(state["plays"]) == ["m7", "m8", "m9"]


# --------------------------------------------------------------------------- viewers, input, purity


@pytest.mark.parametrize(
    "user, device, session, key",
    [("42", "d1", "c1", "u:42"), (None, "d1", "c1", "d:d1"), (None, "", "c1", "s:c1"), (None, None, None, None)],
)
def test_sessionizer_key(user, device, session, key):
    assert sessionizer_key({"user_id": user, "device_id": device, "session_id": session}) == key


def test_guests_and_users_are_separate_viewers():
    _, out = run(watch("a", 0, user=None, device="tv-9"))
    assert views(out)[0].viewer == "d:tv-9"


def _bad(**changes):
    event = playback("m", 0, 0, "START")
    event.update(changes)
    return event


@pytest.mark.parametrize(
    "event, code",
    [
        ("not a dict", "invalid_event"),
        ({"foo": 1}, "invalid_event"),
        (_bad(event_type="REWIND"), "unknown_kind"),
        (_bad(event_type=["START"]), "unknown_kind"),
        (_bad(item_id=""), "missing_field"),
        (_bad(item_id=None), "missing_field"),
        (_bad(event_time=datetime(2024, 5, 1, 20, 0)), "bad_time"),  # naive datetime
        (_bad(event_time="2024-05-01"), "bad_time"),
        (_bad(position_ms=-5), "bad_value"),
        (_bad(position_ms=None), "bad_value"),
        (_bad(duration_ms=-1), "bad_value"),
        (_bad(user_id=None, device_id=None, session_id=None), "missing_field"),
        (session_event("PAUSE", 0), "unknown_kind"),
        ({**session_event("END", 0), "session_id": None}, "missing_field"),
    ],
)
def test_bad_input_is_rejected_with_a_code_and_state_kept(event, code):
    state, _ = run(watch("a", 0))
    new, out = apply(state, event)
    assert new is state
    assert len(out) == 1 and isinstance(out[0], Rejected) and out[0].code == code


def test_epoch_ms_times_are_accepted():
    event = playback("m", 0, 0, "START")
    event["event_time"] = T0_MS
    state, out = apply(None, event)
    assert out == [] and state["start"] == T0_MS


def test_late_event_from_long_before_the_session_is_rejected():
    state, _ = run(watch("a", 7200))
    _, out = apply(state, playback("z", 0, 0, "START"))
    assert [r.code for r in out] == ["late_event"]


def test_apply_does_not_mutate_its_input():
    state, _ = run(watch("a", 0) + [playback("b", 200, 0, "START")])
    frozen = copy.deepcopy(state)
    for event in [playback("b", 260, 60), playback("b", 330, 130), session_event("END", 400),
                  playback("c", 5000, 0, "START")]:
        apply(state, event)
    assert state == frozen


def test_state_survives_a_json_round_trip():
    """Faust tables serialise values; continuing from the decoded copy gives the same output."""
    head = watch("a", 0) + [playback("b", 200, 0, "START"), playback("b", 260, 60)]
    tail = [playback("b", 330, 130), session_event("END", 400)]
    state, _ = run(head)
    direct_state, direct = run(tail, state)
    round_tripped, again = run(tail, json.loads(json.dumps(state)))
    assert direct == again
    assert json.loads(json.dumps(direct_state)) == json.loads(json.dumps(round_tripped))


def test_a_viewer_is_forgotten_by_partition_clocks_not_the_wall_clock():
    from processors.coview.sessionize import expired

    config = SessionConfig()
    state, _ = apply(None, playback("m1", 0, 0, "START"), config)
    last = state["last"]
    hour = config.expire_after_ms
    many = config.expire_after_records + 1
    assert not expired(state, last + hour, many, config)          # event time not far enough past
    assert not expired(state, last + hour + 1, 10, config)        # a replay streaming this viewer's events
    assert expired(state, last + hour + 1, many, config)
    assert not expired(None, last + 10 * hour, many, config)
