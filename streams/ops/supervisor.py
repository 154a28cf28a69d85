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

    def metrics(self, timeout_s: float = 30.0) -> str:
        """The worker's Prometheus page. Its web server shares the event loop with the agents, so on a
        loaded machine a long batch (a training step, a showcase build round) can hold an answer back
        for seconds: the timeout is generous and a timed-out read is tried again once."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        for attempt in (1, 2):
            try:
                with urllib.request.urlopen(url, timeout=timeout_s / 2) as response:
                    return response.read().decode()
            except TimeoutError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every sample of the metric family ``name``."""
        from prometheus_client.parser import text_string_to_metric_families

        return [(sample.labels, sample.value) for family in text_string_to_metric_families(self.metrics())
                if family.name == name for sample in family.samples if sample.name == name]

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

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the worker process has used so far (Linux /proc): a throughput per
        CPU second is what other processes on a shared machine disturb least."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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


@dataclass
class ApiProcess:
    """One or more ``vitrina api`` processes sharing a port (SO_REUSEPORT when more than one)."""

    processes: list[subprocess.Popen]
    port: int
    log_path: Path
    settings: Settings | None = None   # what it was started with (tokens for it: api.auth.dev_client)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self, timeout_s: float = 15.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_api(settings: Settings, port: int | None = None, processes: int = 1, name: str = "api",
              ready_timeout_s: float = 30.0) -> ApiProcess:
    """Start the read API (``vitrina api``) and wait until /healthz answers."""
    port = port or settings.api_port
    env = {**os.environ, **to_env(settings), "VITRINA_API_PORT": str(port), "VITRINA_LOG_JSON": "1",
           "VITRINA_API_REUSE_PORT": "1" if processes > 1 else "0"}
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    handle = open(log_path, "ab")
    # not ``-m streams.cli``: commands of plugins register on the imported streams.cli, not on __main__
    command = [sys.executable, "-c", "import sys; from streams.cli import main; sys.exit(main(['api']))"]
    api = ApiProcess([subprocess.Popen(command, env=env, stdout=handle,
                                       stderr=subprocess.STDOUT, start_new_session=True)
                      for _ in range(processes)], port, log_path, settings)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if not api.alive():
            api.stop()
            raise RuntimeError(f"api exited:\n{api.log_tail()}")
        try:
            with urllib.request.urlopen(f"{api.base_url}/healthz", timeout=2) as response:
                if response.status == 200 and _all_listening(api):
                    return api
        except OSError:
            pass
        time.sleep(0.2)
    api.stop()
    raise RuntimeError(f"api not ready after {ready_timeout_s}s:\n{api.log_tail()}")


def _all_listening(api: ApiProcess) -> bool:
    """Every process holds a listening socket on the port (with SO_REUSEPORT one answering is not enough)."""
    if len(api.processes) == 1:
        return True
    listening: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == api.port:  # 0A = LISTEN
                listening.add(fields[9])
    for process in api.processes:
        try:
            fds = [os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{process.pid}/fd")]
        except OSError:
            return False
        if not any(link[len("socket:["):-1] in listening for link in fds if link.startswith("socket:[")):
            return False
    return True
