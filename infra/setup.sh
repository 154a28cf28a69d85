#!/usr/bin/env bash
# Set up a fresh machine for vitrina: Debian packages (a JRE and Maven if missing), the Apache
# Kafka jars (Maven Central, pinned in infra/kafka/pom.xml, into .kafka/libs), then a virtualenv
# in .venv with vitrina and its Python dependencies pinned by constraints.txt.
# Idempotent: a second run only checks; offline once everything is cached.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(redis-server ffmpeg chromium chromium-driver wrk)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Apache Kafka 4.x brokers need Java 17+; Maven fetches the jars. Any installed JDK/JRE will do.
java_ok() { command -v java >/dev/null && java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; }
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Kafka broker and tools as jars (the version is pinned in the pom); copied again only when
# the pom changes. ~/.m2 caches the downloads, so later runs work offline.
KAFKA_LIBS=.kafka/libs
kafka_stamp=.kafka/.pom.sha256
pom_sum=$(sha256sum infra/kafka/pom.xml | cut -d' ' -f1)
if [ ! -f "$kafka_stamp" ] || [ "$(cat "$kafka_stamp")" != "$pom_sum" ] || ! ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then
  echo "setup: fetching the Apache Kafka jars with Maven (infra/kafka/pom.xml)" >&2
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  offline=""; [ -d "$HOME/.m2/repository/org/apache/kafka" ] && offline="-o"
  mvn -q -B $offline -f infra/kafka/pom.xml dependency:copy-dependencies \
      -DoutputDirectory="$PWD/$KAFKA_LIBS" -DincludeScope=runtime >/dev/null \
    || mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies \
      -DoutputDirectory="$PWD/$KAFKA_LIBS" -DincludeScope=runtime
  echo "$pom_sum" > "$kafka_stamp"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.vitrina-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "setup: installing Python packages (first time takes a few minutes: tensorflow is large)" >&2
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # constraints.txt pins every package to the versions tested here (regenerate: see its header)
  .venv/bin/pip install -q -c constraints.txt -e '.[test]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/vitrina)" >&2
