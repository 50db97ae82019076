# digest in a container: the daemon (`digest run`) by default, or the web app (`digest serve`)
# from the same image (compose.yaml runs both on one volume). Configured only by DIGEST_*
# variables; the database and subscribers.csv live on the /data volume.
#   docker build -t digest .
#   docker run -d --name digest -v digest-data:/data -e DIGEST_FROM=... -e DIGEST_SMTP_HOST=... \
#     -e DIGEST_SEND_AT=07:00 -e DIGEST_TIMEZONE=Europe/Berlin digest

# The build stage: the README's install (a venv in /app/.venv) in two steps, so that a change
# to the sources or the README reuses the layer with the dependencies.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml ./
# The dependencies pyproject.toml names (read from it, so the list cannot drift).
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt
COPY README.md ./
COPY digest ./digest
COPY emails ./emails
# digest itself, then no pip or setuptools left in the venv at run time.
RUN .venv/bin/pip install -q --no-deps . \
    && .venv/bin/python -m pip uninstall -q -y pip setuptools

# The image that runs: the base, the venv from the build stage, a non-root user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    DIGEST_DB=/data/digest.db \
    DIGEST_SUBSCRIBERS=/data/subscribers.csv
# No pip at run time (the base image's own too). /data belongs to digest and to group 0 and is
# group-writable: platforms that run images under an arbitrary user id (OpenShift) use group 0.
RUN if python3 -m pip --version > /dev/null 2>&1; then \
        python3 -m pip uninstall -q -y --root-user-action=ignore pip setuptools wheel; fi \
    && useradd --create-home --uid 10001 --gid 0 digest \
    && mkdir /data && chown digest:0 /data && chmod g+rwX /data
COPY --from=build /app/.venv /app/.venv

USER 10001:0
WORKDIR /data
VOLUME ["/data"]
# SIGTERM (docker stop): the email being sent gets DIGEST_STOP_TIMEOUT seconds (5), then its
# connection is cut (it stays pending, sent again next run) and the daemon exits 0, well within
# the 10 s docker and podman wait before SIGKILL. Allow more with `docker stop -t`.
STOPSIGNAL SIGTERM
# Unhealthy when the daemon stopped, hangs or missed a day's run (60 minutes of grace), or the
# subscribers file or the database is unusable. compose.yaml gives `digest serve` its own.
HEALTHCHECK --interval=5m --timeout=30s --start-period=1m --retries=2 \
    CMD ["digest", "status", "--check"]
CMD ["digest", "run"]
