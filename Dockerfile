# syntax=docker/dockerfile:1
# adfunnel: the Ray head running the Serve applications of config/container.yaml.
# Build: docker build -t adfunnel .   (docker-compose.yml builds it as the `app` service)
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# curl for the healthcheck; nothing else from Debian.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 adfunnel
WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer (Ray and the rest, most of the
# image) is rebuilt only when the dependencies change, not on every code change.
COPY pyproject.toml README.md ./
RUN mkdir -p adfunnel/storage/migrations actors \
    && touch adfunnel/__init__.py actors/__init__.py serve_app.py \
    && pip install . \
    && pip uninstall -y adfunnel \
    && rm -rf adfunnel actors serve_app.py

COPY serve_app.py config.yaml ./
COPY config/ config/
COPY actors/ actors/
COPY adfunnel/ adfunnel/
COPY deploy/docker/entrypoint.sh /usr/local/bin/adfunnel-entrypoint
RUN pip install --no-deps . && chown adfunnel:adfunnel /app

USER adfunnel
# Serve proxy (gateway /, reporter /reports), Ray dashboard, Ray metrics (Prometheus).
EXPOSE 8000 8265 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health/ready || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/adfunnel-entrypoint"]
