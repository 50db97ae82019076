# digest in a container: the daemon (`digest run`), configured only by DIGEST_* variables, with
# the database and subscribers.csv on the /data volume. The install steps are the README's.
#   docker build -t digest .
#   docker run -d --name digest -v "$PWD/data:/data" -e DIGEST_FROM=... -e DIGEST_SMTP_HOST=... \
#     -e DIGEST_SEND_AT=07:00 -e DIGEST_TIMEZONE=Europe/Berlin digest
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/app/.venv/bin:$PATH \
    DIGEST_DB=/data/digest.db \
    DIGEST_SUBSCRIBERS=/data/subscribers.csv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY digest ./digest
COPY emails ./emails
RUN python3 -m venv .venv && .venv/bin/pip install -q . \
    && useradd --create-home --uid 10001 digest && mkdir /data && chown digest /data

USER digest
WORKDIR /data
VOLUME ["/data"]
# SIGTERM (docker stop): the email being sent is finished and recorded, then exit 0.
STOPSIGNAL SIGTERM
# Unhealthy when the daemon stopped, hangs, or missed a day's run (60 minutes of grace).
HEALTHCHECK --interval=5m --timeout=30s --start-period=1m --retries=2 \
    CMD ["digest", "status", "--check"]
CMD ["digest", "run"]
