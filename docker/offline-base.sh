#!/usr/bin/env bash
# Build the base image for `bentoml containerize` without a container registry:
# Debian bookworm from debootstrap with python3 (3.11.2), venv, pip, the host's CA bundle
# and uv, which BentoML's generated Dockerfile needs in the base image.
#
#   docker/offline-base.sh                # -> local/python-base:bookworm (kept if present)
#   REBUILD=1 docker/offline-base.sh      # build again
#
# Env: OFFLINE_BASE_IMAGE (tag, default local/python-base:bookworm), DEBIAN_MIRROR,
# DOCKER_HOST (else docker/engine.sh finds or starts an engine). Needs root (debootstrap).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${OFFLINE_BASE_IMAGE:-local/python-base:bookworm}
STAGE="$IMAGE-stage"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

DOCKER_HOST=$("$HERE/engine.sh" | sed -n 1p)
export DOCKER_HOST
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker)

if [ -z "${REBUILD:-}" ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "offline-base.sh: $IMAGE exists (REBUILD=1 to build it again)" >&2
  echo "$IMAGE"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap; } >&2
fi

ROOTFS=$(mktemp -d /tmp/python-base-rootfs.XXXXXX)
container=""
cleanup() {
  [ -n "$container" ] && "$DOCKER" rm -f "$container" >/dev/null 2>&1 || true
  "$DOCKER" rmi "$STAGE" >/dev/null 2>&1 || true
  rm -rf "$ROOTFS"
}
trap cleanup EXIT

started=$(date +%s)
echo "offline-base.sh: debootstrap bookworm into $ROOTFS" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >&2
# The package index may sit behind a certificate only the host's bundle trusts.
cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
chmod 755 "$ROOTFS"  # mktemp made it 0700: "/" of the image, which non-root users must traverse
tar -C "$ROOTFS" -c . | "$DOCKER" import - "$STAGE" >/dev/null

# uv: BentoML's Dockerfile falls back to `pip install uv`, which PEP 668 refuses on
# Debian's system Python; install it here instead.
container=$("$DOCKER" run -d --network host -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$STAGE" \
  pip install --break-system-packages --no-cache-dir uv)
status=$("$DOCKER" wait "$container")
if [ "$status" != 0 ]; then
  "$DOCKER" logs "$container" >&2
  echo "offline-base.sh: installing uv failed ($status)" >&2
  exit 1
fi
"$DOCKER" commit \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV UV_NATIVE_TLS=1' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  "$container" "$IMAGE" >/dev/null
echo "offline-base.sh: built $IMAGE in $(( $(date +%s) - started )) s," \
  "$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") bytes" >&2
echo "$IMAGE"
