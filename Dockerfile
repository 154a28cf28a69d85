# vitrina: one image for every role (`vitrina worker`, `vitrina api`, `vitrina topics --create`, ops
# commands). Used by docker-compose.kafka.yml; build it on its own with
#
#   docker build -t vitrina:latest .
#   docker run --rm vitrina:latest --help
#
# Python packages are pinned by constraints.txt (the versions the test suite passed with); every one
# of them has a manylinux wheel for CPython 3.11 on x86_64, so no compiler is needed.

# ---- build: a virtualenv with vitrina and its pinned dependencies -----------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/vitrina
ENV PATH=/opt/vitrina/bin:$PATH

WORKDIR /src

# Dependencies first, in their own layer (TensorFlow alone is ~600 MB): a source change then
# reinstalls only vitrina itself.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt

COPY README.md ./
COPY api ./api
COPY infra ./infra
COPY processors ./processors
COPY schemas ./schemas
COPY sinks ./sinks
COPY streams ./streams
# schemas/history/*.avsc (older writer schemas, needed to decode old single-object records) is not
# in pyproject's package-data, so a non-editable install leaves it out: copy it beside the package
# (harmless once package-data lists it) and check that the installed package sees it.
RUN pip install -c constraints.txt . \
 && SITE=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && mkdir -p "$SITE/schemas/history" \
 && cp schemas/history/*.avsc "$SITE/schemas/history/" \
 && cd / && python -c 'from schemas import HISTORY_DIR; assert any(HISTORY_DIR.glob("*.avsc")), HISTORY_DIR' \
 && vitrina --help > /dev/null

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# ffmpeg/ffprobe: the upload pipeline (inspect, encode, thumbnails); VMAF uses the static ffmpeg of
# the imageio-ffmpeg wheel. libstdc++6: TensorFlow, LiteRT, rocksdict, grpc and h5py link it.
# ca-certificates: https S3 endpoints and schema registries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 vitrina \
 && useradd --system --uid 10001 --gid vitrina --create-home --home-dir /home/vitrina vitrina \
 && mkdir -p /var/lib/vitrina \
 && chown vitrina:vitrina /var/lib/vitrina

COPY --from=build /opt/vitrina /opt/vitrina

ENV PATH=/opt/vitrina/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    VITRINA_DATA_DIR=/var/lib/vitrina \
    VITRINA_LOG_JSON=1

USER vitrina
WORKDIR /var/lib/vitrina
# VITRINA_DATA_DIR holds a worker's Faust RocksDB tables (rebuilt from the changelog topics when
# lost); docker-compose.kafka.yml mounts a volume per worker replica there.

# No HEALTHCHECK here: the right probe depends on the role (worker: /metrics on its web port, which
# binds 127.0.0.1 inside the container; api: /healthz); docker-compose.kafka.yml sets one per service.
ENTRYPOINT ["vitrina"]
CMD ["worker"]
