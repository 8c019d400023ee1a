# syntax=docker/dockerfile:1.7
# Image of the webhooks service (signed webhook delivery to subscriber endpoints).
# Build from the repository root (the workspace and its one uv.lock are the context):
#
#   docker build -f deploy/docker/webhooks.Dockerfile -t riverbed-webhooks .
#
# Stage "build" installs the locked third-party dependencies first, in a layer that is
# rebuilt only when uv.lock or pyproject.toml change, then this service and the two
# workspace packages it depends on (contracts, riverbed), not editable, into /app/.venv.
# The final stage is the slim Python image plus that virtualenv: no uv, no compiler, no
# sources or tests, running as an unprivileged user; it works with a read-only root
# filesystem given a writable /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# 1. third-party dependencies only (the lock is the truth; no workspace package yet)
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package riverbed-webhooks
# 2. the workspace packages this service needs, as wheels: the sources stay in this stage
COPY pyproject.toml uv.lock ./
COPY contracts/ contracts/
COPY riverbed/ riverbed/
COPY services/webhooks/ services/webhooks/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package riverbed-webhooks

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="riverbed-webhooks" \
      org.opencontainers.image.description="Riverbed webhooks service" \
      org.opencontainers.image.source="deploy/docker/webhooks.Dockerfile"
# a fixed numeric uid/gid, so that Kubernetes can check runAsNonRoot
RUN groupadd --system --gid 10001 riverbed \
    && useradd --system --uid 10001 --gid riverbed --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin riverbed
# owned by root and not writable by the service: the code cannot be changed at run time
COPY --from=build /app/.venv /app/.venv
COPY deploy/docker/healthcheck.py /app/healthcheck.py
# SQLite by default, on a volume; production passes a PostgreSQL URL instead
RUN mkdir /data && chown 10001:10001 /data
VOLUME ["/data"]
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WEBHOOKS_DATABASE_URL=sqlite+aiosqlite:////data/webhooks.db \
    WEBHOOKS_HOST=0.0.0.0 \
    WEBHOOKS_PORT=8002 \
    WEBHOOKS_LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
EXPOSE 8002
# exec form below: the service is PID 1 and receives SIGTERM itself, then drains
# (RIVERBED_CONSUMER_SHUTDOWN_TIMEOUT_S, 30 s) and exits 0; give it longer than that
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "WEBHOOKS_PORT", "/readyz"]
ENTRYPOINT ["/app/.venv/bin/riverbed-webhooks"]
