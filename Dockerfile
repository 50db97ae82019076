# digest in a container: configured only by DIGEST_* variables, state on the /data volume.
#   docker build -t digest .
#   docker run --rm -v "$PWD/data:/data" -e DIGEST_FROM=... -e DIGEST_SMTP_HOST=... digest
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DIGEST_DB=/data/digest.db \
    DIGEST_SUBSCRIBERS=/data/subscribers.csv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY digest ./digest
COPY emails ./emails
RUN pip install . && useradd --create-home --uid 10001 digest && mkdir /data && chown digest /data

USER digest
WORKDIR /data
VOLUME ["/data"]
CMD ["digest", "send"]
