"""Print the headline figures of every bench/results/*.json as a Markdown table (for the README)."""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

HEADLINES = {
    "produce": ["api_events_per_s", "raw_events_per_s", "ratio", "consume_events_per_s"],
    "transcode": ["pipeline_source_s_per_wall_s", "raw_ffmpeg_source_s_per_wall_s", "overhead_ratio", "dedupe_hit_s",
                  "dedupe_hit_fraction_of_transcode"],
    "coview": ["events_per_s", "worst_case_events_per_s", "raw_consume_events_per_s", "freshness_p50_s", "freshness_p95_s", "hr10", "ndcg10",
               "best_baseline_ndcg10"],
    "coview_quality": ["measure", "hr10", "ndcg10", "best_baseline", "best_baseline_ndcg10"],
    "ranking": ["train_samples_per_s", "export_s", "tflite_bytes", "tflite_quant_bytes", "tflite_p50_ms_24_candidates",
                "tflite_p99_ms_24_candidates", "auc", "baseline_auc"],
    "read_api": ["rps", "p50_ms", "p95_ms", "p99_ms", "concurrency", "redis_get_rps", "showcase_builds_per_s"],
    "replay": ["first_pass_events_per_s", "replay_events_per_s", "replay_to_first_pass_ratio"],
}


def main() -> None:
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        keys = HEADLINES.get(path.stem, [k for k, v in data.items() if isinstance(v, (int, float))][:8])
        print(f"\n**{path.stem}** (`{data.get('command', '?')}`)\n")
        print("| figure | value |\n|---|---|")
        for key in keys:
            if key in data:
                print(f"| `{key}` | {json.dumps(data[key])} |")


if __name__ == "__main__":
    main()
