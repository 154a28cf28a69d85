"""Run Faust workers as child processes (the main job, tests and benchmarks use this)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from infra.settings import Settings, to_env


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    web_port: int
    log_path: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def counter(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus counter's samples matching the labels."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def kill(self) -> None:
        """kill -9 the worker (crash tests)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_worker(settings: Settings, web_port: int | None = None, name: str = "worker",
                 extra_env: dict[str, str] | None = None, ready_timeout_s: float = 120.0) -> WorkerProcess:
    """Start ``vitrina worker`` and wait until its agents have partitions assigned."""
    web_port = web_port or settings.worker_web_port
    env = {**os.environ, **to_env(settings),
           "VITRINA_WORKER_WEB_PORT": str(web_port), "VITRINA_LOG_JSON": "1", **(extra_env or {})}
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    handle = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"], env=env,
                               stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerProcess(process, web_port, log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited with {process.returncode}:\n{worker.log_tail()}")
        if "[^Worker]: Ready" in worker.log_tail(400):
            try:
                worker.metrics()
                return worker
            except OSError:
                pass
        time.sleep(0.5)
    worker.stop()
    raise RuntimeError(f"worker not ready after {ready_timeout_s}s:\n{worker.log_tail()}")
