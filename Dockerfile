# One image for the API, the Celery worker and the one-shot migration.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 configsync

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md alembic.ini ./
COPY configsync ./configsync
COPY projections ./projections
COPY alembic ./alembic
# Editable, so that alembic/ stays beside the package and a bind-mounted ./configsync is live.
RUN pip install -e . && mkdir -p /app/logs && chown configsync:configsync /app/logs

USER configsync
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live')"
CMD ["configsync", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
