"""How far the per-record decode is from the floor of building the same dict in CPython (issue 16).

The worker's profile puts about a third of its CPU in ``decode_record`` (docs/performance.md). This
bench times, per schema of the replay's input, on records of the replay's own generator:

* ``codec``: ``SingleObjectCodec.decode`` as the worker calls it (header checks, cavro, end mark);
* ``cavro``: cavro's decode of the framed record alone;
* ``cavro_timestamps_as_int``: the same without logical types (``timestamp-millis`` fields stay epoch
  milliseconds instead of becoming timezone-aware datetimes);
* ``fastavro``: fastavro's ``schemaless_reader`` of the body (the codec before session 9);
* ``json_loads`` (the baseline): ``json.loads`` of the same record written as JSON, i.e. CPython's
  C parser building the same dict of the same values - what any decoder that returns a dict pays at least.

Rounds are interleaved (every variant once per round) and the median per record is reported with
each variant's ratio to ``json_loads``. Writes ``bench/results/decode_floor.json``.

    .venv/bin/python -m bench.decode_floor [--records 2000] [--rounds 15]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from datetime import datetime
from typing import Callable

import cavro
import fastavro

from bench._common import write_result
from streams.kafka import codec as codec_module

SCHEMAS = {"vitrina.PlaybackEvent": "playback", "vitrina.RankingImpression": "impressions"}


def _epoch_ms(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    raise TypeError(type(value).__name__)


def _check_same_values(variants: dict[str, Callable[[], list]], count: int) -> None:
    """Every variant decodes the same records to the same values (timestamps compared as epoch ms), so the
    bench compares like with like; this first call is also the warm-up."""
    decoded = {name: fn() for name, fn in variants.items()}
    for name in ("cavro", "cavro_timestamps_as_int"):
        decoded[name] = [framed["record"] for framed in decoded[name]]
    as_json = {name: [json.loads(json.dumps(value, default=_epoch_ms)) for value in values]
               for name, values in decoded.items()}
    for name, values in as_json.items():
        if len(values) != count or values != as_json["codec"]:
            raise AssertionError(f"{name} does not decode the records to the codec's values")


def _per_record_us(fn: Callable[[], object], count: int) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) / count * 1e6


def measure(name: str, records: list[dict], rounds: int) -> dict:
    codec = codec_module.default_codec()
    schema = codec.store.current(name)
    raws = [codec.encode(name, record) for record in records]
    # the very dict the worker gets, its timestamps as epoch milliseconds (JSON has no datetime)
    texts = [json.dumps(codec.decode(raw, name), default=_epoch_ms) for raw in raws]
    plain = cavro.Schema(schema.framed.schema, options=schema.framed.options.replace(logical_types=()))
    mark = codec_module.END_MARK
    variants: dict[str, Callable[[], object]] = {
        "codec": lambda: [codec.decode(raw, name) for raw in raws],
        "cavro": lambda: [schema.framed.binary_decode(raw + mark) for raw in raws],
        "cavro_timestamps_as_int": lambda: [plain.binary_decode(raw + mark) for raw in raws],
        "fastavro": lambda: [fastavro.schemaless_reader(io.BytesIO(raw[10:]), schema.parsed, None) for raw in raws],
        "json_loads": lambda: [json.loads(text) for text in texts],
    }
    _check_same_values(variants, len(raws))
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant, fn in variants.items():
            times[variant].append(_per_record_us(fn, len(raws)))
    medians = {v: round(statistics.median(t), 2) for v, t in times.items()}
    return {"records": len(raws), "bytes_per_record": round(sum(map(len, raws)) / len(raws), 1),
            "us_per_record": medians,
            "ratio_to_json_loads": {v: round(m / medians["json_loads"], 2) for v, m in medians.items()}}


def main(argv: list[str] | None = None) -> int:
    from demo.pipeline_input import make_pipeline_input

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per schema (default 2000)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    args = parser.parse_args(argv)
    data = make_pipeline_input(300, max(200, args.records // 8), 5, users=400, items=120, clusters=6)
    result: dict = {"broker": "none: records encoded and decoded in process (no Kafka involved)", "schemas": {}}
    for name, field in SCHEMAS.items():
        records = getattr(data, field)[: args.records]
        result["schemas"][name] = measure(name, records, args.rounds)
        figures = result["schemas"][name]
        print(f"{name}: " + ", ".join(f"{v} {us:.2f} us ({figures['ratio_to_json_loads'][v]:.2f}x)"
                                      for v, us in figures["us_per_record"].items()), flush=True)
    write_result("decode_floor", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
