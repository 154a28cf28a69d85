"""The main job, as a newcomer runs it: ``vitrina demo --down`` on an embedded stack of its own.

It starts SeaweedFS, Apache Kafka and Redis, a worker, publishes the generated stream and prints every
capability's views (through the read API, with bearer tokens), then stops the stack. The test checks
that it finishes, that each stage printed its section, and that it leaves no process behind.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.ports import pick_free_ports
from infra.stack import free_port_env

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("Publishing a generated stream", "Shelf definitions", "Play counts per title", "Uploads: transcode",
          "Similar titles from session co-views", "Online ranking model", "Showcase: playback -> history")


@pytest.mark.slow
def test_vitrina_demo_runs_every_stage_and_stops_the_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINA_")}
    api_port, web_port = pick_free_ports(2)
    env.update(free_port_env(tmp_path / "data"), VITRINA_API_PORT=str(api_port),
               VITRINA_WORKER_WEB_PORT=str(web_port), VITRINA_LOG_JSON="1")
    run = subprocess.run([sys.executable, "-c", "import sys; from streams.cli import main; sys.exit(main(sys.argv[1:]))",
                          "demo", "--down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    out = run.stdout
    assert run.returncode == 0, f"vitrina demo failed:\n{out[-3000:]}\n{run.stderr[-3000:]}"
    missing = [stage for stage in STAGES if stage not in out]
    assert not missing, f"stages missing from the output: {missing}\n{out[-3000:]}"
    assert out.rstrip().endswith("done.")
    # issue 14's loop in the main job: the model re-ranks served shelves; with two versions a playoff
    # splits users and the online metrics of both arms reach the registry
    assert "[re-ranked by " in out
    if "split users by a stable hash" in out:
        assert "online metrics per serving version" in out, out[-3000:]
    assert not list((tmp_path / "data" / "run").glob("*.pid")), "the stack was not stopped"
