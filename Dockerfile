# RevPulse worker image: `docker build -t revpulse .` then `docker run revpulse` (= `revpulse worker`).
# Any other command works too, e.g. `docker run revpulse replay /data/events.jsonl`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the package build needs, so a local .venv, .git or caches never reach the image.
COPY pyproject.toml ./
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
COPY connectors ./connectors
COPY src ./src
RUN pip install --no-cache-dir . \
    && rm -rf /src/build /src/*.egg-info

# Unprivileged user; /data (REVPULSE_DATA_DIR) exists and is theirs (0700), so a named volume mounted there
# is initialised with that ownership and stays writable.
RUN groupadd --system --gid 10001 revpulse \
    && useradd --system --uid 10001 --gid revpulse --home-dir /data --no-create-home revpulse \
    && mkdir -p /data /app \
    && chown revpulse:revpulse /data \
    && chmod 0700 /data
# The web port listens on every interface of the container (the default, 127.0.0.1, would be unreachable from
# outside it); who reaches it is decided by how the port is published. Set REVPULSE_READ_TOKEN to protect
# /metrics and /api/*.
ENV REVPULSE_DATA_DIR=/data \
    REVPULSE_WEB_HOST=0.0.0.0
# The working directory is not the data volume: a `.env` is read from the working directory, and a file on the
# data volume must never become configuration. /app is empty, root's, and not writable by the worker.
WORKDIR /app
USER revpulse

EXPOSE 6066
ENTRYPOINT ["revpulse"]
CMD ["worker"]
