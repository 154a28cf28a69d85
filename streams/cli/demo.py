"""``vitrina demo``: the main job on the embedded stack."""
from __future__ import annotations

import argparse
import gc
import time

from infra.settings import load
from streams.cli import command
from demo.main import SIZES, STAGES, DemoContext
from streams.runtime.plugins import import_all



def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="stream size (default small)")
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--external", action="store_true",
                   help="use the already running stack from the VITRINA_* settings (e.g. docker-compose.kafka.yml) "
                        "instead of starting the embedded one")
    p.add_argument("--down", action="store_true", help="stop the embedded stack at the end")
    p.add_argument("--only", help="comma-separated stage names to run (default all)")


@command("demo", "the main job: start the stack and workers, feed a realistic stream, print the views")(_args)
def run_demo(args: argparse.Namespace) -> int:
    from infra.stack import EmbeddedStack
    from streams.kafka.producer import EventProducer
    from streams.ops.supervisor import start_worker
    from streams.kafka.topics import ensure_topics

    import_all("demo", prefix="stage_")  # every demo/stage_*.py registers its stages
    settings = load()
    if not args.external:  # the embedded Redis requires a password generated into the data dir
        from infra.secrets import ensure_dev_secrets
        settings = ensure_dev_secrets(settings)
    stack = None if args.external else EmbeddedStack(settings)
    if stack:
        broker = "Tansu broker on S3" if settings.broker == "tansu" else "Apache Kafka"
        print(f"starting the embedded stack (SeaweedFS S3, {broker}, Redis) ...", flush=True)
        began = time.monotonic()
        for status in stack.up():
            print(f"  {status.name:<9} {status.detail}", flush=True)
        print(f"  stack up in {time.monotonic() - began:.1f}s", flush=True)
    ensure_topics(settings)
    print("starting a Faust worker ...", flush=True)
    worker = start_worker(settings)
    wanted = set(args.only.split(",")) if args.only else None
    ctx = None
    try:
        ctx = DemoContext(settings=settings, producer=EventProducer(settings), worker=worker, size=args.size,
                          seed=args.seed)
        for _, name, run in STAGES:
            if wanted is None or name in wanted:
                run(ctx)
    finally:
        worker.stop()
        if ctx is not None:
            try:
                ctx.producer.flush(10)
            except Exception as exc:  # noqa: BLE001 - the stages' own errors matter more
                print(f"some demo events were not delivered: {exc}")
        del ctx  # Kafka clients go before the broker does (else they log connection refusals)
        gc.collect()
        if stack and args.down:
            stack.down()
    print("\ndone. The stack is still up: try `vitrina status`, `vitrina tail stats.plays -n 5`, `vitrina down`."
          if stack and not args.down else "\ndone.")
    return 0
