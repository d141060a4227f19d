# syntax=docker/dockerfile:1
# One image for every Mailyard service; the command picks the service:
#   mailyard-smtp-ingress | mailyard-queue | mailyard-remote-delivery |
#   mailyard-local-delivery | mailyard-relay-auth | mailyard-directory | mailyard-mail-access |
#   mailyard-dovecot-conf | mailyard (admin CLI)
# nats-server is not in here: it runs from the official nats image beside this one.
# BASE_IMAGE: the published image builds on Docker Hub's slim Python; where no registry can
# be reached, `make image` makes an equivalent Debian bookworm + Python 3.11 base from Debian's
# packages (scripts/base-image.sh) and passes it here.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with the workspace members installed (not editable) ----------
FROM ${BASE_IMAGE} AS builder
# PyPI over a slow or flaky link: a longer timeout and retries, not a failed build.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=60 \
    PIP_RETRIES=10 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/mailyard
COPY packages/ packages/
COPY services/ services/
# Order matters only for readability: pip resolves the mailyard-* names from these paths.
RUN /opt/mailyard/bin/pip install --no-cache-dir \
        ./packages/api ./packages/core ./packages/cli \
        ./services/smtp-ingress ./services/queue ./services/remote-delivery \
        ./services/local-delivery ./services/relay-auth ./services/directory \
        ./services/mail-access \
 && /opt/mailyard/bin/python -m compileall -q /opt/mailyard/lib \
 && /opt/mailyard/bin/pip uninstall --yes pip \
 && rm -f /opt/mailyard/bin/nats-server

# ---- runtime: the venv only; no compiler, no pip, no shell tools added ----------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="mailyard" \
      org.opencontainers.image.description="Mailyard mail services (qmail rebuilt on NATS JetStream)" \
      org.opencontainers.image.source="https://example.invalid/mailyard"
# The base image's own pip/setuptools are build tools the runtime never needs (Debian's
# python3.11 has none). The mount points exist owned by the service user, so a fresh named
# volume (compose) starts writable by it; Kubernetes uses fsGroup instead.
RUN if python -m pip --version >/dev/null 2>&1; then \
        python -m pip uninstall --yes --no-cache-dir pip setuptools wheel; fi \
 && groupadd --system --gid 10001 mailyard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mailyard \
 && mkdir -p /var/spool/mailyard /var/mail/mailyard /var/lib/mailyard/queue \
        /run/mail-access /etc/dovecot-mailyard \
 && chown 10001:10001 /var/spool/mailyard /var/mail/mailyard /var/lib/mailyard/queue \
        /run/mail-access /etc/dovecot-mailyard
COPY --from=builder /opt/mailyard /opt/mailyard
# Dovecot's config templates, rendered by mailyard-dovecot-conf in the mail-access pod.
COPY deploy/dovecot/ /usr/share/mailyard/dovecot/
ENV PATH=/opt/mailyard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Inside containers every service serves /healthz /readyz /metrics on 8080 and gRPC on 50051;
# smtp-ingress listens on unprivileged 2525/2587/2465 (Services map 25/587/465 onto them).
EXPOSE 8080 50051 2525 2587 2465
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
CMD ["mailyard", "--help"]
