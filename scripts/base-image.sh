#!/usr/bin/env bash
# The base image Mailyard's Dockerfile builds on (build argument BASE_IMAGE).
# Published builds use the registry's python:3.11-slim-bookworm. Where no container registry
# can be reached (CI machines), this makes an equivalent from Debian's own packages:
# debootstrap --variant=minbase bookworm + python3.11 (+ venv), imported with `podman import`.
# The result is cached on the machine twice: as the podman image itself (the next run is a
# no-op) and as a tarball under $MAILYARD_IMAGE_CACHE (a pruned image store re-imports it
# instead of bootstrapping again).
# Usage: scripts/base-image.sh [IMAGE]   (prints the image name to use as BASE_IMAGE)
set -euo pipefail
image="${1:-localhost/mailyard-base:bookworm-py311}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${MAILYARD_IMAGE_CACHE:-/var/cache/mailyard}"
tarball="$cache/bookworm-py311-minbase.tar"
podman=(podman)

if "${podman[@]}" image exists "$image"; then
  echo "$image"; exit 0
fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  [ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  root="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  # passwd: useradd/groupadd for the service user; ca-certificates: pip reaches PyPI over TLS;
  # python3-venv: the builder stage makes a virtualenv (it brings ensurepip's pip wheel).
  debootstrap --variant=minbase --include=python3.11,python3-venv,ca-certificates,passwd \
    bookworm "$root" "$mirror" >&2
  # This machine's own extra CAs (e.g. a TLS-inspecting egress proxy), so that pip inside a
  # build trusts what pip on the host trusts; the published base does not need them.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  # What python:3.11-slim offers the Dockerfile: `python` on PATH, UTF-8, no apt caches.
  ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*
  tar --numeric-owner -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
"${podman[@]}" import --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python"]' "$tarball" "$image" >&2
echo "$image"
