# workos-forwarder: the sidecar in a container.
#
#   podman build -t workos-forwarder .        (or docker build)
#
# BASE_IMAGE is any Debian-like image whose python3 (3.11+) can make a venv: the official slim
# Python image by default, or a plain Debian bookworm root file system holding only python3,
# python3-venv and ca-certificates (how the tests build it where no registry can be reached;
# see docs/deploy.md). Both stages use the same base, so the venv's interpreter link stays valid.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
LABEL org.opencontainers.image.title="workos-forwarder"
# pip settings for the build only (a mirror, a CA bundle); they never reach the final image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT=60
RUN python3 -m venv /opt/workos-forwarder \
 && /opt/workos-forwarder/bin/pip install --no-cache-dir --disable-pip-version-check --upgrade pip
COPY pyproject.toml README.md /src/
COPY forwarder /src/forwarder
COPY sinks /src/sinks
COPY monitors/sigma /src/monitors/sigma
# `postgres` brings psycopg for several replicas on one PostgreSQL journal (a few MB).
RUN /opt/workos-forwarder/bin/pip install --no-cache-dir --disable-pip-version-check "/src[postgres]" \
 && /opt/workos-forwarder/bin/pip uninstall --yes --disable-pip-version-check setuptools pip

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="workos-forwarder" \
      org.opencontainers.image.description="Verifies WorkOS webhooks, journals them, forwards them to Datadog, OTLP, Prometheus and JSON lines"
# A fixed numeric user and group, so a PersistentVolume, securityContext.runAsUser and
# fsGroup can name them; no login shell, no home beyond the journal directory.
ARG UID=10001
RUN groupadd --system --gid ${UID} workos-forwarder \
 && useradd --system --uid ${UID} --gid ${UID} --no-create-home \
      --home-dir /var/lib/workos-forwarder --shell /usr/sbin/nologin workos-forwarder \
 && mkdir -p /var/lib/workos-forwarder \
 && chown ${UID}:${UID} /var/lib/workos-forwarder \
 && chmod 0700 /var/lib/workos-forwarder
COPY --from=build /opt/workos-forwarder /opt/workos-forwarder

# Listen on every interface inside the container: webhooks on 8080; probes, /metrics and
# /status on the admin listener, 8081 (keep it off the internet); the journal in the volume below. Python
# writes nothing at run time (bytecode was compiled at install), so the root file system can
# be mounted read-only. No secret is set here: WORKOS_WEBHOOK_SECRET comes at run time.
ENV PATH=/opt/workos-forwarder/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FORWARDER_HOST=0.0.0.0 \
    FORWARDER_PORT=8080 \
    FORWARDER_ADMIN_HOST=0.0.0.0 \
    FORWARDER_ADMIN_PORT=8081 \
    FORWARDER_DATA_DIR=/var/lib/workos-forwarder
VOLUME ["/var/lib/workos-forwarder"]
WORKDIR /var/lib/workos-forwarder
USER ${UID}:${UID}
EXPOSE 8080 8081
# The service is PID 1 itself (exec form, no shell in between): uvicorn handles SIGTERM and
# SIGINT (drain, then exit 0), the forwarder SIGHUP (reopen files); it starts no child
# processes, so there is nothing to reap.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/workos-forwarder/bin/workos-forwarder"]
CMD ["serve"]
