"""Knobs read once into ``infra.settings.Settings`` and passed in (issue 16): each keeps its variable,
its default and its error on a bad value, and reaches a child process through ``to_env``."""
from __future__ import annotations

import os
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from infra.settings import Settings, to_env

ROOT = Path(__file__).resolve().parents[3]

# variable -> (field, its value with the variable unset)
MOVED = {
    "VITRINA_STATUS_WORKERS": ("status_workers", ""),
    "VITRINA_API_REUSE_PORT": ("api_reuse_port", False),
    "VITRINA_VERIFY_HIGHWATERS": ("verify_highwaters", True),
    "VITRINA_GC_THRESHOLD": ("gc_threshold", "50000,20,100"),
    "VITRINA_LAG_EVERY_S": ("lag_every_s", 15.0),
    "VITRINA_AGENTS": ("agents", ""),
    "VITRINA_SHOWCASE_RANKING": ("showcase_ranking", True),
    "VITRINA_RANKING_MODEL_NAME": ("ranking_model_name", "ranking"),
    "VITRINA_PRODUCER_LINGER_MS": ("producer_linger_ms", 50),
    "VITRINA_REDIS_RETRIES": ("redis_retries", 20),
    "VITRINA_ENCODER_CONCURRENCY": ("encoder_concurrency", ""),
    "VITRINA_RANKING_GATE": ("ranking_gate", True),
    "VITRINA_MAX_EVENT_BYTES": ("max_event_bytes", 512 * 1024),
    "VITRINA_DEAD_LETTER_KEEP_BYTES": ("dead_letter_keep_bytes", 64 * 1024),
}


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("VITRINA_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_and_names(clean_env):
    settings = Settings()
    for var, (name, default) in MOVED.items():
        assert f"VITRINA_{name.upper()}" == var
        assert getattr(settings, name) == default, var


@pytest.mark.parametrize("var,value,expected", [
    ("VITRINA_API_REUSE_PORT", "1", True), ("VITRINA_API_REUSE_PORT", "yes", False),
    ("VITRINA_VERIFY_HIGHWATERS", "0", False), ("VITRINA_VERIFY_HIGHWATERS", "false", True),
    ("VITRINA_SHOWCASE_RANKING", " Off ", False), ("VITRINA_SHOWCASE_RANKING", "2", True),
    ("VITRINA_RANKING_GATE", "no", False),
    ("VITRINA_STATUS_WORKERS", " 10.0.0.1:16066,10.0.0.2:16066 ", "10.0.0.1:16066,10.0.0.2:16066"),
    ("VITRINA_LAG_EVERY_S", "0.5", 0.5), ("VITRINA_PRODUCER_LINGER_MS", "5", 5), ("VITRINA_REDIS_RETRIES", "3", 3),
])
def test_values_parse_as_before(clean_env, var, value, expected):
    clean_env.setenv(var, value)
    assert getattr(Settings(), MOVED[var][0]) == expected


@pytest.mark.parametrize("var", ["VITRINA_LAG_EVERY_S", "VITRINA_PRODUCER_LINGER_MS", "VITRINA_REDIS_RETRIES"])
def test_bad_numbers_fail_like_every_setting(clean_env, var):
    clean_env.setenv(var, "soon")
    with pytest.raises(ValueError):
        Settings()


def test_to_env_reproduces_the_settings(clean_env):
    clean_env.setenv("VITRINA_AGENTS", "plays,history")
    clean_env.setenv("VITRINA_VERIFY_HIGHWATERS", "0")
    clean_env.setenv("VITRINA_RANKING_BATCH", "64")
    settings = Settings()
    for var, value in to_env(settings).items():
        clean_env.setenv(var, value)
    assert Settings() == settings


def test_ranking_variables_are_settings_fields(clean_env):
    from streams.capabilities.ranking.settings import RankingSettingsError, load_ranking_settings

    text = (ROOT / "streams" / "capabilities" / "ranking" / "settings.py").read_text()
    named = set(re.findall(r"\bVITRINA_[A-Z0-9_]*[A-Z0-9]\b", text))
    known = {f"VITRINA_{f.name.upper()}" for f in fields(Settings)}
    assert named and not named - known
    settings = Settings()
    ranking = load_ranking_settings(settings)
    assert (ranking.model_name, ranking.batch_size, ranking.lateness_s, ranking.gate) == ("ranking", 256, 21600, True)
    with pytest.raises(RankingSettingsError, match="VITRINA_RANKING_BATCH='abc'"):
        load_ranking_settings(replace(settings, ranking_batch="abc"))
    with pytest.raises(RankingSettingsError, match="VITRINA_RANKING_MODEL="):
        load_ranking_settings(replace(settings, ranking_model="huge"))
    clean_env.setenv("VITRINA_LABEL_WINDOW_S", "0")
    with pytest.raises(RankingSettingsError, match="VITRINA_LABEL_WINDOW_S='0' must be >= 1"):
        load_ranking_settings(Settings())


def test_code_takes_the_values_it_is_given(clean_env):
    from api.routes_ops import worker_urls
    from processors.media.encode import default_concurrency
    from sinks.redis_views import sync_client
    from streams.capabilities.ranking.serving import ServingModels, serving_enabled
    from streams.kafka.producer import producer_config

    settings = Settings()
    assert worker_urls(settings) == [f"http://127.0.0.1:{settings.worker_web_port}/metrics"]
    assert worker_urls(replace(settings, status_workers="a:1, b:2")) == ["http://a:1/metrics", "http://b:2/metrics"]
    assert producer_config(replace(settings, producer_linger_ms=7))["linger.ms"] == 7
    assert default_concurrency(replace(settings, encoder_concurrency="3").encoder_concurrency) == 3
    assert not serving_enabled(replace(settings, showcase_ranking=False))
    assert ServingModels(None, settings=replace(settings, ranking_model_name="other")).name == "other"
    client = sync_client(replace(settings, redis_retries=4))
    try:
        assert client.get_retry()._retries == 4
    finally:
        client.close()


def test_the_record_size_limits_are_the_ones_passed_in():
    """Not module constants read at import: a worker's Settings decide (streams/runtime/records.py,
    streams/kafka/deadletter.py)."""
    from streams.kafka.codec import default_codec
    from streams.kafka.deadletter import OVERSIZED, dead_letter
    from streams.kafka.topics import spec
    from streams.runtime.records import Refused, decode_record

    with pytest.raises(Refused) as refused:
        decode_record(default_codec(), spec("playback"), b"k", b"x" * 200, None, 0, 0, 0, max_event_bytes=100)
    assert refused.value.code == OVERSIZED and "100-byte limit" in refused.value.text
    with pytest.raises(Refused) as refused:  # under the limit: decoded (and refused for its bytes, not its size)
        decode_record(default_codec(), spec("playback"), b"k", b"x" * 200, None, 0, 0, 0, max_event_bytes=1000)
    assert refused.value.code != OVERSIZED
    letter = dead_letter("playback", 0, 0, "a", "X", "e", b"k", b"v" * 50, keep_bytes=10)
    assert letter["truncated"] and letter["value"] == b"v" * 10 and letter["value_size"] == 50
