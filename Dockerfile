# driftline in a container: the `driftline` command, run as a non-root user.
#
#   docker build -t driftline .
#   docker run --rm driftline --help
#   docker run --rm -p 6066:6066 -e DRIFTLINE_BROKER=kafka://broker:9092 driftline
#
# The default command is the streaming worker with its web server (/healthz,
# /models, /metrics) listening on every interface of the container: the
# worker binds 127.0.0.1 unless told otherwise, which a published port cannot
# reach. Any other subcommand replaces it: `docker run driftline simulate ...`.
# docker-compose.yml runs the whole stack (Kafka, worker, Prometheus, Grafana).

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

# ---------------------------------------------------------------- build
# Installs driftline (not editable, no dev extra) and its dependencies into a
# virtual environment that the runtime stage copies whole; compilers, if a
# dependency ever needs one, stay in this stage.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/driftline
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/driftline/bin/pip install . \
    && /opt/driftline/bin/driftline --version

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="driftline" \
      org.opencontainers.image.description="Kafka-native monitor that catches machine-learning models going bad in production" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/driftline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed uid, so that a volume mounted on the data directory can be prepared
# for it (named volumes take the ownership of /var/lib/driftline/data below).
RUN groupadd --system --gid 10001 driftline \
    && useradd --system --uid 10001 --gid driftline --no-create-home \
        --home-dir /var/lib/driftline --shell /usr/sbin/nologin driftline \
    && mkdir -p /var/lib/driftline/data \
    && chown -R driftline:driftline /var/lib/driftline

COPY --from=build /opt/driftline /opt/driftline

USER driftline
WORKDIR /var/lib/driftline

# The worker's web port (`driftline worker --web-port`, default 6066).
EXPOSE 6066

ENTRYPOINT ["driftline"]
CMD ["worker", "--web-host", "0.0.0.0", "--data-dir", "/var/lib/driftline/data"]
