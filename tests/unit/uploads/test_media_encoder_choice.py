"""The per-title encoder choice (processors.media.complexity.choose_encoder): pure, no ffmpeg.

Trials are what the probe measures: each candidate's (CRF, kbps, VMAF) points on the samples and the wall
time of its trial encode. The choice is the fewest bits at the target VMAF within the encode-time budget."""
from __future__ import annotations

import pytest

from processors.media import EncodeSettings
from processors.media.complexity import (
    CANDIDATES,
    CandidateTrial,
    EffortBudget,
    ProbePoint,
    candidates_from,
    choose_encoder,
    config,
    predicted_encode_s,
)

REF = 640 * 360
LADDER_720P = 426 * 240 + 640 * 360 + 854 * 480 + 1280 * 720      # 7.2 x the reference pixels


def trial(name: str, scale: float, encode_s: float, shift: float = 0.0) -> CandidateTrial:
    """A curve like the default's with `scale` x its rates and VMAF + shift."""
    preset, *knobs = name.split("+")
    tune = next((k for k in knobs if not k.startswith("aq")), None)
    aq = next((int(k[2:]) for k in knobs if k.startswith("aq")), None)
    points = ((20, 800.0, 97.0), (26, 400.0, 93.0), (32, 200.0, 85.0))
    return CandidateTrial(config(preset, tune, aq),
                          tuple(ProbePoint(c, k * scale, min(100.0, v + shift)) for c, k, v in points), encode_s)


DEFAULT_BUDGET = EffortBudget()


def choose(trials, duration_s=10.0, sampled_s=6.0, budget=DEFAULT_BUDGET, target=90.0):
    return choose_encoder(trials, target_vmaf=target, duration_s=duration_s, sampled_s=sampled_s,
                          reference_pixels=REF, ladder_pixels=LADDER_720P, budget=budget)


def test_the_fewest_bits_at_the_target_within_budget_wins_and_the_reasons_are_recorded():
    trials = [trial("veryfast", 1.0, 1.0), trial("medium", 0.9, 2.0), trial("slower", 0.75, 6.0),
              trial("slower+animation", 0.7, 6.5)]
    choice = choose(trials)
    assert choice.changed and choice.config.name == "slower+animation"
    assert choice.compared_at_vmaf == pytest.approx(90.0)
    rows = {r["name"]: r for r in choice.candidates}
    assert rows["veryfast"]["saved_vs_default"] == pytest.approx(0.0)
    assert rows["medium"]["saved_vs_default"] == pytest.approx(0.1)
    assert rows["slower+animation"]["saved_vs_default"] == pytest.approx(0.3)
    assert rows["slower+animation"]["verdict"] == "chosen"
    assert rows["slower"]["time_x_default"] == pytest.approx(6.0)
    # predicted ladder time: one point's trial time x duration / sample x ladder pixels / reference pixels
    assert rows["slower"]["predicted_encode_s"] == pytest.approx(6.0 / 3 * 10 / 6 * LADDER_720P / REF, rel=1e-3)
    as_dict = choice.as_dict()
    assert as_dict["chosen"] == {"name": "slower+animation", "preset": "slower", "tune": "animation", "aq_mode": None}
    assert as_dict["default"] == "veryfast" and "saves 30.0%" in as_dict["reason"]


def test_a_long_title_keeps_the_fast_default_when_the_better_encoders_do_not_fit_the_budget():
    trials = [trial("veryfast", 1.0, 1.0), trial("medium", 0.9, 2.0), trial("slower", 0.7, 6.0)]
    budget = EffortBudget(per_source_s=4.0, min_s=30.0, max_s=300.0)
    # per source second: slower 2 s / 3 points / 6 s sample x 7.2 = 2.4 s, medium 0.8 s
    # 10 s: slower predicts 24 s <= budget 40 s
    assert choose(trials, duration_s=10.0, budget=budget).config.name == "slower"
    # 200 s: budget 300 s (capped); slower predicts 481 s (over), medium 160 s (fits)
    mid = choose(trials, duration_s=200.0, budget=budget)
    assert mid.config.name == "medium"
    assert {r["name"]: r.get("verdict") for r in mid.candidates}["slower"] == "over the time budget"
    # 30 min: even medium (1444 s) is over the 300 s: the default stays
    long = choose(trials, duration_s=1800.0, budget=budget)
    assert not long.changed and long.budget_s == 300.0 and "no candidate" in long.reason


def test_a_hard_title_with_slow_measured_trials_keeps_the_default():
    """The budget is checked against the MEASURED speed: the same gain is not bought when this title's
    trials encode slowly (hard content, many pixels)."""
    cheap = [trial("veryfast", 1.0, 0.5), trial("slower", 0.8, 2.0)]
    dear = [trial("veryfast", 1.0, 4.0), trial("slower", 0.8, 20.0)]
    assert choose(cheap, duration_s=20.0).config.name == "slower"
    assert not choose(dear, duration_s=20.0).changed


def test_a_small_gain_is_noise_and_a_dearer_candidate_is_never_chosen():
    assert not choose([trial("veryfast", 1.0, 1.0), trial("medium", 0.98, 2.0)]).changed      # 2 % < 3 %
    assert choose([trial("veryfast", 1.0, 1.0), trial("medium", 0.98, 2.0)],
                  budget=EffortBudget(min_gain=0.01)).config.name == "medium"
    worse = choose([trial("veryfast", 1.0, 1.0), trial("slower+aq3", 1.2, 3.0)])
    assert not worse.changed
    assert {r["name"]: r["saved_vs_default"] for r in worse.candidates}["slower+aq3"] == pytest.approx(-0.2)


def test_candidates_are_compared_at_equal_vmaf_not_at_equal_crf():
    """A candidate scoring higher at every CRF for the same bytes saves bits at equal VMAF; the comparison
    VMAF is the target, clamped into the range every candidate measured (no extrapolation)."""
    base = trial("veryfast", 1.0, 1.0)
    sharper = trial("slower", 1.0, 3.0, shift=4.0)       # same rates, +4 VMAF: its 85..97 becomes 89..100
    choice = choose([base, sharper], target=88.0)
    assert choice.compared_at_vmaf == pytest.approx(89.0)   # 88 is below the slower curve's lowest point
    saved = {r["name"]: r["saved_vs_default"] for r in choice.candidates}["slower"]
    assert saved == pytest.approx(1 - 200 / (200 * 2 ** ((89 - 85) / 8)), rel=1e-3)
    assert choice.changed


def test_unmeasured_or_skipped_candidates_are_reported_not_chosen():
    skipped = CandidateTrial(config("slower"), skipped="predicted 900.0 s from its prior cost > budget 300.0 s")
    choice = choose([trial("veryfast", 1.0, 1.0), skipped])
    assert not choice.changed
    row = {r["name"]: r for r in choice.candidates}["slower"]
    assert row["verdict"].startswith("not trialled: predicted 900.0 s")
    missing_default = choose([CandidateTrial(config("veryfast"), skipped="failed"), trial("slower", 0.5, 1.0)])
    assert not missing_default.changed and missing_default.reason == "the default was not measured"
    far = trial("slower", 1.0, 1.0, shift=40.0)          # 100..100: no overlap with 85..97
    assert not choose([trial("veryfast", 1.0, 1.0), far]).changed
    with pytest.raises(ValueError):
        choose([])


def test_budget_scales_with_duration_within_bounds():
    budget = EffortBudget(per_source_s=4.0, min_s=30.0, max_s=300.0)
    assert budget.seconds(2.0) == 30.0 and budget.seconds(20.0) == 80.0 and budget.seconds(3600.0) == 300.0
    settings = EncodeSettings.from_env({"VITRINA_PER_TITLE_BUDGET_X": "2", "VITRINA_PER_TITLE_BUDGET_MIN_S": "10",
                                        "VITRINA_PER_TITLE_BUDGET_MAX_S": "60", "VITRINA_PER_TITLE_MIN_GAIN": "0.05"})
    assert EffortBudget.of(settings) == EffortBudget(2.0, 10.0, 60.0, 0.05)
    t = trial("veryfast", 1.0, 3.0)
    assert predicted_encode_s(t, duration_s=12.0, sampled_s=6.0, reference_pixels=REF,
                              ladder_pixels=2 * REF) == pytest.approx(1.0 * 2 * 2)


def test_candidate_sets_are_small_and_the_default_comes_first():
    assert len(CANDIDATES) <= 6
    names = [c.name for c in candidates_from("default")]
    assert names == ["veryfast", "medium", "slow", "slower", "slower+animation", "slower+aq3"]
    assert [c.name for c in candidates_from("")] == ["veryfast"]                       # switched off
    assert [c.name for c in candidates_from("slower+aq3, medium", "fast")] == ["fast", "slower+aq3", "medium"]
    assert [c.name for c in candidates_from("medium,veryfast")] == ["veryfast", "medium"]   # no duplicate default
    assert config("slower", aq_mode=3).x264_args() == ["-preset", "slower", "-aq-mode", "3"]
    assert config("slower", tune="film").x264_args() == ["-preset", "slower", "-tune", "film"]
    assert config("slower").prior_cost > config("medium").prior_cost > config("veryfast").prior_cost
