"""Shared bench plumbing: an embedded stack for the run, machine facts, result files."""
from __future__ import annotations

import json
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from infra.settings import Settings, load

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    mem_gib = None
    try:
        with open("/proc/meminfo") as handle:
            mem_gib = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": mem_gib, "python": platform.python_version(),
            "platform": platform.platform()}


_BROKER_RUN_ENV = "VITRINA_BENCH_BROKER_RUN"


def broker_name(settings: Settings) -> str:
    """The broker as written in results: ``Apache Kafka 4.1.1`` or ``Tansu``."""
    if settings.broker == "tansu":
        return "Tansu"
    try:
        from infra.kafka_node import kafka_version, libs_dir
        return f"Apache Kafka {kafka_version(libs_dir())}"
    except Exception:  # noqa: BLE001 - an external cluster: version unknown here
        return "Apache Kafka"


def add_broker_argument(parser: "argparse.ArgumentParser") -> None:
    parser.add_argument("--broker", choices=("kafka", "tansu", "both"), default="both",
                        help="broker(s) to measure on, each on a fresh embedded stack of its own "
                             "(default both: Apache Kafka, then Tansu, in the same run)")


def run_per_broker(name: str, broker: str, compare: list[str]) -> bool:
    """Run this bench once per broker in a child process on a fresh private stack, then merge.

    Returns False in the child (or for a single broker given on the command line), meaning "measure
    here". With ``both``, each child writes ``NAME.<broker>.json``; ``NAME.json`` then holds the
    Apache Kafka figures at the top level (``broker`` names it), Tansu's under ``tansu``, and
    ``kafka_to_tansu`` with the ratio of each key in ``compare`` (goal: none below 0.9).
    """
    import subprocess
    import tempfile

    if os.environ.get(_BROKER_RUN_ENV) or broker != "both":
        if not os.environ.get(_BROKER_RUN_ENV):
            os.environ["VITRINA_BROKER"] = broker
        return False
    from infra.stack import free_port_env

    args = [a for a in sys.argv[1:]]
    results: dict[str, dict] = {}
    for each in ("kafka", "tansu"):
        print(f"=== {name} on {each} ===", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-{each}-") as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINA_")}
            env.update(free_port_env(Path(tmp)), VITRINA_BROKER=each, **{_BROKER_RUN_ENV: each})
            subprocess.run([sys.executable, "-m", f"bench.{Path(sys.argv[0]).stem}", *args, "--broker", each],
                           env=env, check=True)
        results[each] = json.loads((RESULTS / f"{name}.{each}.json").read_text())
    kafka, tansu = results["kafka"], results["tansu"]
    ratios = {key: round(kafka[key] / tansu[key], 3) for key in compare
              if isinstance(kafka.get(key), (int, float)) and isinstance(tansu.get(key), (int, float)) and tansu[key]}
    merged = {**kafka, "tansu": {k: v for k, v in tansu.items() if k not in ("machine", "command")},
              "kafka_to_tansu": ratios}
    for key, ratio in ratios.items():
        print(f"{key:>32}: Kafka {kafka[key]} / Tansu {tansu[key]} = {ratio}")
    write_result(name, merged)
    return True


def write_result(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    module = Path(sys.argv[0]).stem
    command = ["python", "-m", f"bench.{module}"] if module != "-c" else ["python"]
    figures = {"command": " ".join(command + sys.argv[1:]), **figures, "machine": machine()}
    run = os.environ.get(_BROKER_RUN_ENV)
    path = RESULTS / (f"{name}.{run}.json" if run and not name.endswith(f".{run}") else f"{name}.json")
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {path}")
    return path


@contextmanager
def running_stack(settings: Settings | None = None, *, die_with_parent: bool = False) -> Iterator[Settings]:
    """Use the configured stack if it is up; otherwise start the embedded one and stop it after
    (``die_with_parent``: its processes also end when the bench is killed)."""
    from infra.stack import EmbeddedStack
    from streams.kafka.topics import ensure_topics

    settings = settings or load()
    stack = EmbeddedStack(settings, die_with_parent=die_with_parent)
    already_up = all(s.healthy for s in stack.status())
    if not already_up:
        stack.up()
    try:
        ensure_topics(settings)
        yield settings
    finally:
        if not already_up:
            stack.down()
