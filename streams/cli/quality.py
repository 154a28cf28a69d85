"""``vitrina quality recompute ASSET_ID``: whole-title VMAF of a stored asset's renditions, no re-encode.

``--event`` publishes a RECOMPUTE_QUALITY AssetCommand on ``assets.commands`` instead: the worker's
asset-commands agent runs it (one at a time) and writes the result where this command writes it."""
from __future__ import annotations

import argparse
import json
import sys

from streams.cli import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["recompute"], help="recompute: score every rendition again")
    p.add_argument("asset_id", help="asset id '<md5>-<size>'")
    p.add_argument("--n-subsample", type=int, default=5, help="score every Nth frame (default 5)")
    p.add_argument("--max-seconds", type=float, default=None, help="only the first seconds (default: whole title)")
    p.add_argument("--event", action="store_true",
                   help="publish a RECOMPUTE_QUALITY command for the worker instead of scoring here")
    p.add_argument("--reason", default=None, help="with --event: free text kept with the command")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


@command("quality", "quality (VQS): `recompute ASSET_ID` scores a stored asset's renditions again")(_args)
def run_quality(args: argparse.Namespace) -> int:
    from infra.settings import load
    from streams.capabilities.uploads.quality import RecomputeError, recompute_quality
    if args.event:
        return _publish(args)
    try:
        result = recompute_quality(load(), args.asset_id, n_subsample=args.n_subsample, max_seconds=args.max_seconds)
    except RecomputeError as exc:
        print(json.dumps({"error": exc.code, "message": str(exc)}) if args.json else f"vitrina quality: {exc}",
              file=sys.stdout if args.json else sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"asset {result['asset_id']} ({result['duration_s']:.1f} s, {result['scope']}) in {result['elapsed_s']:.1f} s")
    for name, scores in result["renditions"].items():
        print(f"  {name:<6} {scores['before']} -> {scores['after']}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from processors.asset_references import RECOMPUTE_QUALITY
    from streams.cli.collection import fail, publish_command
    try:
        cmd = publish_command(RECOMPUTE_QUALITY, args.asset_id, reason=args.reason)
    except ValueError as exc:
        return fail("quality recompute", "BAD_ARGUMENT", str(exc), args.json)
    except Exception as exc:  # noqa: BLE001 - broker unreachable
        return fail("quality recompute", "NOT_PUBLISHED", f"could not publish: {exc}", args.json)
    print(json.dumps({"published": cmd}, default=str, sort_keys=True) if args.json
          else f"published RECOMPUTE_QUALITY of {args.asset_id} (run by the asset-commands agent)")
    return 0
