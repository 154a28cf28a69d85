"""Label rules (table-driven + real KuaiRand rows) and the impression x playback join."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from processors.ranking.errors import RankingInputError
from processors.ranking.labels import JoinerConfig, LabelJoiner, label_watch

KUAIRAND = Path("/work/shared/data/datasets/kuairand-sample-200/kuairand_sample.csv")
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)

F, T = False, True


@pytest.mark.parametrize(
    ("watched_ms", "duration_ms", "played", "finish_event", "expected"),
    [
        # (evr, lvr, svr, fpr)
        (0, 30_000, False, False, (F, F, F, F)),  # never played: negative everywhere, svr too
        (0, 30_000, True, False, (F, F, T, F)),  # started, left immediately
        (2_999, 30_000, True, False, (F, F, T, F)),  # just under 3 s
        (3_000, 30_000, True, False, (F, F, F, F)),  # 3 s: no longer short, 30% of 30 s = 9 s not reached
        (9_000, 30_000, True, False, (T, F, F, F)),  # 30% of a 30 s clip
        (17_999, 30_000, True, False, (T, F, F, F)),
        (18_000, 30_000, True, False, (T, T, F, F)),  # 60% of 30 s
        (28_500, 30_000, True, False, (T, T, F, T)),  # 95%
        (9_999, 7_200_000, True, False, (F, F, F, F)),  # a 2 h film: evr needs 10 s
        (10_000, 7_200_000, True, False, (T, F, F, F)),
        (60_000, 7_200_000, True, False, (T, T, F, F)),  # lvr capped at 60 s for long titles
        (600_000, 7_200_000, True, True, (T, T, F, T)),  # COMPLETE/credits event finishes early
        (2_000, 2_000, True, False, (T, T, F, T)),  # a 2 s clip watched to the end is not a short view
        (1_000, 2_000, True, False, (F, F, T, F)),  # thresholds never drop below 3 s
        (5_000, 0, True, False, (F, F, F, F)),  # unknown duration: absolute thresholds only
        (10_000, 0, True, False, (T, F, F, F)),
        (60_000, None, True, False, (T, T, F, F)),
        (1_000, 0, True, True, (T, T, F, T)),  # unknown duration, finish event
        (75_202, 36_733, True, False, (T, T, F, T)),  # watched longer than the clip (replays)
    ],
)
def test_label_rules(watched_ms, duration_ms, played, finish_event, expected):
    labels = label_watch(watched_ms, duration_ms, played=played, finished_event=finish_event)
    assert (labels["evr"], labels["lvr"], labels["svr"], labels["fpr"]) == expected


def test_negative_watch_time_is_rejected():
    with pytest.raises(RankingInputError) as err:
        label_watch(-1, 1000)
    assert err.value.code == "negative_watch_time"


def _kuairand_rows() -> list[dict[str, str]]:
    with KUAIRAND.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_kuairand_real_rows_follow_the_rules():
    rows = _kuairand_rows()
    assert len(rows) == 200
    labels = [label_watch(int(r["play_time_ms"]), int(r["duration_ms"])) for r in rows]
    plays = [(int(r["play_time_ms"]), int(r["duration_ms"])) for r in rows]
    # 142 real plays under 3 s (MANIFEST); none of them is a finished clip
    assert sum(lab["svr"] for lab in labels) == 142
    assert all(lab["svr"] == (play < 3_000) for lab, (play, _) in zip(labels, plays, strict=False))
    for lab in labels:
        assert not (lab["fpr"] and not lab["lvr"]) and not (lab["lvr"] and not lab["evr"])
        assert not (lab["svr"] and lab["evr"])
    # duration 0 (18 real rows): never finished without an event, evr only from 10 s
    zero = [(lab, play) for lab, (play, dur) in zip(labels, plays, strict=False) if dur == 0]
    assert len(zero) == 18
    assert not any(lab["fpr"] for lab, _ in zero)
    assert all(lab["evr"] == (play >= 10_000) for lab, play in zero)
    # finished: 95% of a known duration - 9 real rows, 5 of them at or past 100%
    finished = [(play, dur) for lab, (play, dur) in zip(labels, plays, strict=False) if lab["fpr"]]
    assert len(finished) == 9
    assert sum(play >= dur for play, dur in finished) == 5
    assert (7_594, 7_600) in finished and (13_914, 13_933) in finished


@pytest.mark.parametrize(
    ("play", "duration", "expected"),
    [
        (52_269, 30_066, (T, T, F, T)),
        (46_950, 150_233, (T, F, F, F)),  # 47 s of 2.5 min: effective, not long (needs 60 s)
        (12_802, 248_800, (T, F, F, F)),
        (9_970, 149_933, (F, F, F, F)),  # 30 ms short of the 10 s effective view
        (863, 30_066, (F, F, T, F)),
        (7_631, 0, (F, F, F, F)),
    ],
)
def test_kuairand_specific_rows(play, duration, expected):
    assert (play, duration) in {(int(r["play_time_ms"]), int(r["duration_ms"])) for r in _kuairand_rows()}
    lab = label_watch(play, duration)
    assert (lab["evr"], lab["lvr"], lab["svr"], lab["fpr"]) == expected


# ---------------------------------------------------------------- joiner


def impression(item="i1", user="u1", at=T0, imp_id=None, device="d1", duration=600_000, **extra):
    return {
        "impression_id": imp_id or f"imp-{item}-{at.isoformat()}",
        "request_id": "r1",
        "user_id": user,
        "device_id": device,
        "device_type": "TV",
        "item_id": item,
        "position": 0,
        "surface": "HOME",
        "recent_watched": [],
        "pxtr": {"evr": 0.5, "lvr": 0.4, "svr": 0.1, "fpr": 0.2},
        "context": {
            "network_kbps": 5000,
            "device_score": 0.7,
            "cached_ratio": 0.0,
            "item_duration_ms": duration,
            "hour_of_day": 12,
        },
        "labels": None,
        "event_time": at,
        **extra,
    }


def playback(kind, position_ms, at, item="i1", user="u1", session="s1", device="d1", duration=600_000):
    return {
        "event_id": f"{session}-{kind}-{at.isoformat()}",
        "session_id": session,
        "user_id": user,
        "device_id": device,
        "device_type": "TV",
        "os": "tizen",
        "app_version": "1.0",
        "item_id": item,
        "event_type": kind,
        "position_ms": position_ms,
        "duration_ms": duration,
        "network_kbps": 5000,
        "buffered_ratio": 0.5,
        "stall_ms": 0,
        "bitrate_kbps": 3000,
        "event_time": at,
    }


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def labels_of(sample):
    lab = sample.impression["labels"]
    return lab["evr"], lab["lvr"], lab["svr"], lab["fpr"]


def test_unplayed_impression_becomes_negative_only_after_the_window():
    joiner = LabelJoiner()
    joiner.add_impression(impression())
    assert joiner.expire(T0 + timedelta(minutes=29)) == []
    out = joiner.expire(T0 + timedelta(minutes=30))
    assert len(out) == 1 and not out[0].played
    assert labels_of(out[0]) == (F, F, F, F)
    assert joiner.pending_impressions == 0


def test_play_with_heartbeats_pause_and_stop():
    joiner = LabelJoiner()
    joiner.add_impression(impression())
    for ev in [
        playback("START", 0, T0 + s(10)),
        playback("HEARTBEAT", 30_000, T0 + s(40)),
        playback("PAUSE", 35_000, T0 + s(45)),
        playback("RESUME", 35_000, T0 + s(600)),  # 9.25 min paused: not watched
        playback("STOP", 70_000, T0 + s(635)),
    ]:
        joiner.add_playback(ev)
    assert joiner.expire(T0 + timedelta(minutes=29)) == []  # window still open
    [sample] = joiner.expire(T0 + timedelta(minutes=30))
    assert sample.played and sample.watched_ms == pytest.approx(70_000)
    assert labels_of(sample) == (T, T, F, F)
    assert sample.impression["impression_id"] == impression()["impression_id"]


def test_forward_seek_does_not_count_as_watched():
    joiner = LabelJoiner()
    joiner.add_impression(impression(duration=600_000))
    joiner.add_playback(playback("START", 0, T0 + s(1)))
    joiner.add_playback(playback("SEEK", 590_000, T0 + s(3)))  # jumped to the end after 2 s
    joiner.add_playback(playback("STOP", 592_000, T0 + s(5)))
    [sample] = joiner.expire(T0 + timedelta(hours=1))
    assert sample.watched_ms == pytest.approx(4_000)
    assert labels_of(sample) == (F, F, F, F)  # 4 s: neither short nor effective


def test_complete_event_sets_finished_and_stall_time_is_not_watch_time():
    joiner = LabelJoiner()
    joiner.add_impression(impression(duration=20_000))
    joiner.add_playback(playback("START", 0, T0 + s(1), duration=20_000))
    joiner.add_playback(playback("STALL", 0, T0 + s(5), duration=20_000))  # 4 s stuck at 0
    joiner.add_playback(playback("COMPLETE", 16_000, T0 + s(21), duration=20_000))
    [sample] = joiner.expire(T0 + timedelta(hours=1))
    assert sample.watched_ms == pytest.approx(16_000)
    assert labels_of(sample) == (T, T, F, T)


def test_short_view_is_labelled():
    joiner = LabelJoiner()
    joiner.add_impression(impression())
    joiner.add_playback(playback("START", 0, T0 + s(2)))
    joiner.add_playback(playback("STOP", 1_500, T0 + s(3.5)))
    [sample] = joiner.expire(T0 + timedelta(minutes=30))
    assert labels_of(sample) == (F, F, T, F)


def test_play_after_the_window_is_not_attributed():
    joiner = LabelJoiner()
    joiner.add_impression(impression())
    joiner.add_playback(playback("START", 0, T0 + timedelta(minutes=31)))
    joiner.add_playback(playback("STOP", 120_000, T0 + timedelta(minutes=33)))
    [sample] = joiner.expire(T0 + timedelta(hours=2))
    assert not sample.played and labels_of(sample) == (F, F, F, F)
    assert joiner.stats.orphan_plays_dropped == 1


def test_play_of_another_item_or_viewer_is_not_attributed():
    joiner = LabelJoiner()
    joiner.add_impression(impression())
    joiner.add_playback(playback("START", 0, T0 + s(5), item="i2"))
    joiner.add_playback(playback("STOP", 120_000, T0 + s(125), item="i2"))
    joiner.add_playback(playback("START", 0, T0 + s(5), user="u2", session="s2", device="d2"))
    joiner.add_playback(playback("STOP", 120_000, T0 + s(125), user="u2", session="s2", device="d2"))
    [sample] = joiner.expire(T0 + timedelta(hours=2))
    assert not sample.played


def test_last_touch_attribution_between_two_impressions():
    joiner = LabelJoiner()
    first = impression(imp_id="first", at=T0)
    second = impression(imp_id="second", at=T0 + timedelta(minutes=10))
    joiner.add_impression(first)
    joiner.add_impression(second)
    joiner.add_playback(playback("START", 0, T0 + timedelta(minutes=12)))
    joiner.add_playback(playback("STOP", 90_000, T0 + timedelta(minutes=12) + s(90)))
    out = {smp.impression["impression_id"]: smp for smp in joiner.expire(T0 + timedelta(hours=1))}
    assert not out["first"].played
    assert out["second"].played and labels_of(out["second"]) == (T, T, F, F)


def test_guest_is_joined_by_device():
    joiner = LabelJoiner()
    joiner.add_impression(impression(user=None, device="tv-7"))
    joiner.add_playback(playback("START", 0, T0 + s(5), user=None, device="tv-7"))
    joiner.add_playback(playback("STOP", 15_000, T0 + s(20), user=None, device="tv-7"))
    [sample] = joiner.expire(T0 + timedelta(hours=1))
    assert sample.played and labels_of(sample) == (T, F, F, F)


def test_impression_arriving_after_its_playback_still_joins():
    joiner = LabelJoiner()
    joiner.add_playback(playback("START", 0, T0 + s(30)))
    joiner.add_playback(playback("STOP", 40_000, T0 + s(70)))
    joiner.add_impression(impression(at=T0))
    [sample] = joiner.expire(T0 + timedelta(hours=1))
    assert sample.played and sample.watched_ms == pytest.approx(40_000)


def test_long_play_waits_for_its_end_then_idle_timeout_closes_it():
    cfg = JoinerConfig(idle_timeout=timedelta(minutes=10))
    joiner = LabelJoiner(cfg)
    joiner.add_impression(impression(duration=7_200_000))
    joiner.add_playback(playback("START", 0, T0 + s(10), duration=7_200_000))
    for minute in range(5, 41, 5):
        joiner.add_playback(playback("HEARTBEAT", minute * 60_000, T0 + s(10 + minute * 60), duration=7_200_000))
    # window closed at 30 min but the play is still going (last heartbeat at ~40 min)
    assert joiner.expire(T0 + timedelta(minutes=45)) == []
    [sample] = joiner.expire(T0 + timedelta(minutes=51))  # 10 min without events
    assert sample.watched_ms == pytest.approx(40 * 60_000)
    assert labels_of(sample) == (T, T, F, F)


def test_max_label_age_forces_a_label():
    cfg = JoinerConfig(idle_timeout=timedelta(hours=10), max_label_age=timedelta(hours=1))
    joiner = LabelJoiner(cfg)
    joiner.add_impression(impression())
    joiner.add_playback(playback("START", 0, T0 + s(10)))
    joiner.add_playback(playback("HEARTBEAT", 20_000, T0 + s(30)))
    assert joiner.expire(T0 + timedelta(minutes=59)) == []
    [sample] = joiner.expire(T0 + timedelta(hours=1))
    assert sample.played and labels_of(sample) == (T, F, F, F)


def test_events_after_the_label_are_ignored_but_a_restart_is_a_new_play():
    joiner = LabelJoiner()
    joiner.add_impression(impression())
    joiner.add_playback(playback("START", 0, T0 + s(10)))
    joiner.add_playback(playback("STOP", 20_000, T0 + s(30)))
    assert len(joiner.expire(T0 + timedelta(minutes=31))) == 1
    joiner.add_playback(playback("HEARTBEAT", 25_000, T0 + timedelta(minutes=32)))
    assert joiner.stats.ignored_events == 1
    second = impression(imp_id="again", at=T0 + timedelta(minutes=40))
    joiner.add_impression(second)
    joiner.add_playback(playback("START", 0, T0 + timedelta(minutes=41)))
    joiner.add_playback(playback("STOP", 2_000, T0 + timedelta(minutes=41) + s(2)))
    [sample] = joiner.expire(T0 + timedelta(hours=2))
    assert sample.impression["impression_id"] == "again" and labels_of(sample) == (F, F, T, F)


def test_duplicate_events_do_not_double_count():
    joiner = LabelJoiner()
    joiner.add_impression(impression())
    events = [playback("START", 0, T0 + s(10)), playback("STOP", 20_000, T0 + s(30))]
    for ev in events + events:
        joiner.add_playback(ev)
    [sample] = joiner.expire(T0 + timedelta(hours=1))
    assert sample.watched_ms == pytest.approx(20_000)


def test_flush_emits_everything_pending():
    joiner = LabelJoiner()
    joiner.add_impression(impression(item="a"))
    joiner.add_impression(impression(item="b"))
    joiner.add_playback(playback("START", 0, T0 + s(1), item="a"))
    out = joiner.flush(T0 + s(5))
    assert sorted(smp.impression["item_id"] for smp in out) == ["a", "b"]
    assert all(smp.forced for smp in out) and joiner.pending_impressions == 0


def test_pending_cap_forces_the_oldest_out():
    joiner = LabelJoiner(JoinerConfig(max_pending_impressions=2))
    for minute in range(4):
        joiner.add_impression(impression(item=f"i{minute}", at=T0 + timedelta(minutes=minute)))
    out = joiner.expire(T0 + timedelta(minutes=5))
    assert [smp.impression["item_id"] for smp in out] == ["i0", "i1"]
    assert joiner.pending_impressions == 2 and joiner.stats.forced == 2


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({**impression(), "event_time": "2024-03-01T12:00:00Z"}, "bad_timestamp"),
        ({**impression(), "event_time": datetime(2024, 3, 1)}, "naive_datetime"),
        ({**impression(), "item_id": None}, "missing_field"),
        ({**impression(), "user_id": None, "device_id": None}, "missing_viewer"),
        ({**impression(), "context": {"item_duration_ms": -5}}, "bad_duration"),
    ],
)
def test_bad_impressions_get_machine_readable_errors(event, code):
    with pytest.raises(RankingInputError) as err:
        LabelJoiner().add_impression(event)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"event_type": "REWIND"}, "bad_event_type"),
        ({"position_ms": -1}, "bad_position"),
        ({"position_ms": 1.5}, "bad_position"),
        ({"session_id": ""}, "missing_field"),
    ],
)
def test_bad_playbacks_get_machine_readable_errors(patch, code):
    with pytest.raises(RankingInputError) as err:
        LabelJoiner().add_playback({**playback("START", 0, T0), **patch})
    assert err.value.code == code


def test_kuairand_rows_through_the_joiner():
    """Each real row becomes an impression + START/STOP play of play_time_ms; labels match the rules."""
    rows = _kuairand_rows()
    joiner = LabelJoiner()
    expected = {}
    for n, row in enumerate(rows):
        at = T0 + timedelta(hours=n)
        play, duration = int(row["play_time_ms"]), int(row["duration_ms"])
        item, user = f"v{row['video_id']}", f"k{row['user_id']}"
        imp = impression(item=item, user=user, imp_id=f"kr-{n}", at=at, duration=duration)
        joiner.add_impression(imp)
        joiner.add_playback(playback("START", 0, at + s(3), item=item, user=user, session=f"ks{n}", duration=duration))
        joiner.add_playback(
            playback(
                "STOP",
                play,
                at + s(3) + timedelta(milliseconds=play),
                item=item,
                user=user,
                session=f"ks{n}",
                duration=duration,
            )
        )
        expected[f"kr-{n}"] = label_watch(play, duration)
    out = joiner.expire(T0 + timedelta(hours=len(rows) + 1))
    assert len(out) == 200
    for smp in out:
        assert smp.impression["labels"] == expected[smp.impression["impression_id"]]
    assert sum(smp.impression["labels"]["svr"] for smp in out) == 142
