# Production image: web (ASGI), Celery worker and beat all run from it with different commands.
# Configuration comes only from environment variables; no secret is baked in.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
# Only the pinned runtime dependencies (not the embedded Postgres/Redis wheels, which are for
# development machines, and not the project itself: it runs from /app, where its prompts,
# help-center articles and templates live beside the code).
RUN pip install --upgrade pip \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -r requirements.txt \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['ledgerly']['no-deps-dependencies']))" > no-deps.txt \
    && pip install --no-deps -r no-deps.txt

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    LEDGERLY_ENV=production \
    LOG_FORMAT=json \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/ledgerly-metrics
# /metrics sums the processes of one container (prometheus-client multiprocess mode): their
# files live in PROMETHEUS_MULTIPROC_DIR, which the web command empties at start. A worker
# container serves its own on METRICS_PORT when that is set.
RUN groupadd --system ledgerly && useradd --system --gid ledgerly --home-dir /app ledgerly \
    && mkdir -p /tmp/ledgerly-metrics && chown ledgerly:ledgerly /tmp/ledgerly-metrics
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=ledgerly:ledgerly . .
# Static files are collected at build time; the throwaway key exists only for this command.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input -v0 \
    && chown -R ledgerly:ledgerly /app/staticfiles
USER ledgerly
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=2)"
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\"/* && exec uvicorn ledgerly.asgi:application --host 0.0.0.0 --port ${PORT} --workers ${WEB_CONCURRENCY:-2} --proxy-headers"]
