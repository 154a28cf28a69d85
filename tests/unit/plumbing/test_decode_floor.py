"""bench/decode_floor.py times the same records through every decoder, which must agree on their values."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # ``bench`` is not an installed package
    sys.path.insert(0, str(ROOT))

import pytest

from bench.decode_floor import SCHEMAS, _check_same_values, measure
from demo.pipeline_input import make_pipeline_input


def test_every_decoder_is_timed_against_json_loads_of_the_same_records() -> None:
    data = make_pipeline_input(50, 20, 5, users=20, items=30, clusters=3)
    for name, field in SCHEMAS.items():
        got = measure(name, getattr(data, field)[:50], rounds=1)
        assert got["records"] == 50
        assert set(got["us_per_record"]) == {"codec", "cavro", "cavro_timestamps_as_int", "fastavro", "json_loads"}
        assert got["ratio_to_json_loads"]["json_loads"] == 1.0
        assert all(us > 0 for us in got["us_per_record"].values())


def test_a_decoder_that_disagrees_is_refused() -> None:
    records = [{"a": 1}, {"a": 2}]
    variants = {"codec": lambda: records, "cavro": lambda: [{"record": r} for r in records],
                "cavro_timestamps_as_int": lambda: [{"record": r} for r in records],
                "json_loads": lambda: [{"a": 1}, {"a": 3}]}
    with pytest.raises(AssertionError, match="json_loads"):
        _check_same_values(variants, 2)
