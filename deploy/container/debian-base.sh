#!/usr/bin/env bash
# Build a plain Debian bookworm base image holding only python3, python3-venv and
# ca-certificates, for `podman build --build-arg BASE_IMAGE=NAME` where no image registry can
# be reached (only a Debian mirror). Needs root, debootstrap and podman; about 1 minute.
#
#   deploy/container/debian-base.sh [NAME] [MIRROR]
#
# NAME defaults to localhost/workos-forwarder-base:bookworm. MIRROR defaults to the first
# Debian mirror in this machine's apt sources, else deb.debian.org.
set -euo pipefail

name=${1:-localhost/workos-forwarder-base:bookworm}
mirror=${2:-}
if [[ -z $mirror ]]; then
  # One-line sources ("deb URL suite ...") and deb822 sources ("URIs: URL"), security excluded.
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | sed -nE 's/^deb +(\[[^]]*\] +)?(https?:[^ ]+).*/\2/p; s/^URIs: *(https?:[^ ]+).*/\1/p' \
    | grep -v -- '-security' | head -n 1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >/dev/null
# apt's lists and caches are of no use in an image that never runs apt.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --quiet - "$name" >/dev/null
echo "$name"
