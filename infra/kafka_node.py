"""Apache Kafka KRaft nodes for the embedded stack: jars, per-node configuration, storage format.

The jars come from Maven Central through ``infra/kafka/pom.xml`` (``infra/setup.sh`` copies them
to ``.kafka/libs``); a node is ``java -cp 'libs/*' kafka.Kafka server.properties``. Every node is
broker and controller at once (combined KRaft mode): one node for the default stack, three for
``vitrina up --brokers 3`` (a three-voter quorum survives the loss of any one node).

Node ``i`` (1-based) listens for clients on ``broker_port + 2 * (i - 1)`` and for the controller
quorum on the port right above it, so a cluster needs a block of ``2 * brokers`` ports. The storage
of each node is formatted once (``kafka.tools.StorageTool format``) with one cluster id kept in
``<data_dir>/kafka/cluster.id``; a formatted node is never formatted again.
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.ports import LOOPBACK

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIBS = REPO_ROOT / ".kafka" / "libs"
SETUP_HINT = "run `bash infra/setup.sh` (it installs a JRE and fetches the Kafka jars with Maven)"


class KafkaNotInstalled(RuntimeError):
    """Java or the Kafka jars are missing; ``hint`` says how to get them."""

    def __init__(self, missing: str, hint: str) -> None:
        super().__init__(f"cannot start Apache Kafka: {missing}; {hint}")
        self.missing = missing
        self.hint = hint


_ALTERNATIVE = "or use the Tansu broker with VITRINA_BROKER=tansu"


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    client_port: int
    controller_port: int
    directory: Path

    @property
    def log_dir(self) -> Path:
        return self.directory / "data"

    @property
    def properties_path(self) -> Path:
        return self.directory / "server.properties"


def nodes(data_dir: Path, broker_port: int, brokers: int) -> list[KafkaNode]:
    """The ``brokers`` nodes of the embedded cluster (node ids 1..brokers)."""
    root = Path(data_dir) / "kafka"
    return [
        KafkaNode(i, broker_port + 2 * (i - 1), broker_port + 2 * (i - 1) + 1, root / f"node-{i}")
        for i in range(1, brokers + 1)
    ]


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaNotInstalled("no `java` on PATH nor in JAVA_HOME (Java 17+ needed)", f"{SETUP_HINT}, {_ALTERNATIVE}")
    return found


def libs_dir() -> Path:
    """The folder of Kafka jars (``VITRINA_KAFKA_LIBS`` overrides ``.kafka/libs``)."""
    path = Path(os.environ.get("VITRINA_KAFKA_LIBS", str(DEFAULT_LIBS)))
    if not any(path.glob("kafka_2.13-*.jar")):
        raise KafkaNotInstalled(f"no Kafka jars in {path}", f"{SETUP_HINT}, {_ALTERNATIVE}")
    return path


def kafka_version(libs: Path) -> str:
    jar = next(libs.glob("kafka_2.13-*.jar"))
    return jar.stem.removeprefix("kafka_2.13-")


def cluster_id(data_dir: Path) -> str:
    """The cluster id of this data dir, made once (a base64url UUID, as ``kafka-storage random-uuid``)."""
    path = Path(data_dir) / "kafka" / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = "-"
    while value.startswith("-"):  # as Kafka's Uuid.randomUuid: an id like "-6le..." reads as an option
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(value + "\n")
    return value


def server_properties(node: KafkaNode, cluster: list[KafkaNode]) -> dict[str, str]:
    """The broker configuration of ``node``: loopback listeners, durable defaults for the cluster size.

    A three-node cluster gets replication factor 3 with ``min.insync.replicas=2`` for every internal
    topic too (offsets, transactions), so ``acks=all`` survives one lost node; one node gets 1/1.
    """
    replicas = min(3, len(cluster))
    min_isr = 2 if replicas >= 3 else 1
    voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in cluster)
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{LOOPBACK}:{node.client_port},CONTROLLER://{LOOPBACK}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{node.client_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.log_dir),
        "num.partitions": "6",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "auto.create.topics.enable": "false",
        # a group of one worker starts consuming at once instead of after 3 s
        "group.initial.rebalance.delay.ms": "0",
        # compaction actually runs on a dev machine: small dirty ratio, frequent checks
        "log.cleaner.enable": "true",
        "log.cleaner.backoff.ms": "1000",
        "log.cleaner.min.cleanable.ratio": "0.1",
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "log.retention.check.interval.ms": "30000",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "2",
        "message.max.bytes": str(8 * 1024 * 1024),
        "replica.fetch.max.bytes": str(8 * 1024 * 1024),
        # a replica that lost its node catches up within seconds on loopback
        "replica.lag.time.max.ms": "10000",
        "controller.quorum.election.timeout.ms": "1000",
        "controller.quorum.fetch.timeout.ms": "2000",
        "controlled.shutdown.enable": "true",
    }


LOG4J2_CONFIG = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
"""


def heap_options(brokers: int) -> list[str]:
    """JVM options: 1 GiB for a single node, 512 MiB each in a three-node cluster (2 cores, 24 GiB).
    ``VITRINA_KAFKA_HEAP`` (e.g. ``2g``) overrides the maximum."""
    maximum = os.environ.get("VITRINA_KAFKA_HEAP", "1g" if brokers == 1 else "512m")
    return [
        "-Xms128m", f"-Xmx{maximum}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        # two cores: fewer GC and JIT threads than the JVM would pick for the host
        "-XX:ParallelGCThreads=2", "-XX:ConcGCThreads=1", "-XX:CICompilerCount=2",
    ]


def prepare(node: KafkaNode, cluster: list[KafkaNode], data_dir: Path, env: dict[str, str]) -> list[str]:
    """Write the node's configuration, format its storage if new, and return its launch argv."""
    java, libs = find_java(), libs_dir()
    node.directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{key}={value}" for key, value in server_properties(node, cluster).items()]
    node.properties_path.write_text("# written by vitrina (infra/kafka_node.py) at every start\n" + "\n".join(lines) + "\n")
    log4j = node.directory / "log4j2.yaml"
    log4j.write_text(LOG4J2_CONFIG)
    classpath = f"{libs}/*"
    # IPv4 sockets: a dual-stack listener shows loopback as ::ffff:127.0.0.1
    jvm = [java, f"-Dlog4j2.configurationFile={log4j}", "-Dkafka.logs.dir=" + str(node.directory / "logs"),
           "-Djava.net.preferIPv4Stack=true"]
    if not (node.log_dir / "meta.properties").exists():
        formatted = subprocess.run(
            [*jvm, "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id(data_dir)}", "-c", str(node.properties_path), "--ignore-formatted"],
            capture_output=True, text=True, env=env, timeout=120,
        )
        if formatted.returncode != 0:
            raise RuntimeError(f"kafka-storage format of node {node.node_id} failed: "
                               f"{(formatted.stderr or formatted.stdout).strip()[-2000:]}")
    return [*jvm, *heap_options(len(cluster)), "-cp", classpath, "kafka.Kafka", str(node.properties_path)]
