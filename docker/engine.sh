#!/usr/bin/env bash
# Make sure a Docker engine answers; print the DOCKER_HOST to use on stdout.
#
# Tries $DOCKER_HOST, /var/run/docker.sock and our own socket in $DOCKERD_ROOT. If none
# answers, installs docker.io (apt, as root) and starts dockerd the way that works on
# machines without a bridge or iptables: `--iptables=false --bridge=none`, so containers
# run with `--network host` (docker/README.md). Storage: overlay2 when the kernel mounts overlayfs here (a container starts at
# once), else vfs, which copies the whole image for every container (8.7 s for 767 MB).
# STORAGE_DRIVER=vfs|overlay2 forces one. A second stdout line "started <pid>" says that
# this call started the daemon (stop it with `kill <pid>` when done).
#
#   export DOCKER_HOST=$(docker/engine.sh | sed -n 1p)
set -euo pipefail

DOCKERD_ROOT=${DOCKERD_ROOT:-/tmp/dockerd}
OWN_HOST="unix://$DOCKERD_ROOT/docker.sock"

cli() {  # Debian's docker CLI first: it has BuildKit (buildx), which `bentoml containerize` needs
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker || true; fi
}

answers() {
  local docker
  docker=$(cli)
  [ -n "$docker" ] && DOCKER_HOST=$1 timeout 20 "$docker" version >/dev/null 2>&1
}

for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "$OWN_HOST"; do
  if [ -n "$host" ] && answers "$host"; then
    echo "$host"
    exit 0
  fi
done

if ! command -v dockerd >/dev/null 2>&1 || [ ! -x /usr/bin/docker ]; then
  echo "engine.sh: no Docker engine answers; installing docker.io" >&2
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io; } >&2 \
    || { echo "engine.sh: cannot install docker.io (need root and apt)" >&2; exit 1; }
fi

overlay_mounts() {  # can this kernel (and our privileges) mount overlayfs?
  local dir
  dir=$(mktemp -d)
  mkdir -p "$dir"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$dir/lower,upperdir=$dir/upper,workdir=$dir/work" \
      "$dir/merged" 2>/dev/null; then
    umount "$dir/merged"
    rm -rf "$dir"
    return 0
  fi
  rm -rf "$dir"
  return 1
}

start_dockerd() {  # start_dockerd DRIVER: 0 once it answers, 1 if it exited
  local driver=$1 pid
  mkdir -p "$DOCKERD_ROOT/root-$driver"
  echo "engine.sh: starting dockerd ($driver, no bridge) on $OWN_HOST, log $DOCKERD_ROOT/dockerd.log" >&2
  setsid nohup dockerd --storage-driver="$driver" --iptables=false --bridge=none \
    --data-root="$DOCKERD_ROOT/root-$driver" --exec-root="$DOCKERD_ROOT/exec" \
    -H "$OWN_HOST" --pidfile "$DOCKERD_ROOT/pid" \
    >"$DOCKERD_ROOT/dockerd.log" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 1 120); do
    if answers "$OWN_HOST"; then
      echo "$OWN_HOST"
      echo "started $pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "engine.sh: dockerd ($driver) exited:" >&2
      tail -n 30 "$DOCKERD_ROOT/dockerd.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "engine.sh: dockerd did not answer within 60 s:" >&2
  tail -n 30 "$DOCKERD_ROOT/dockerd.log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}

mkdir -p "$DOCKERD_ROOT"
driver=${STORAGE_DRIVER:-}
if [ -z "$driver" ]; then
  if overlay_mounts; then driver=overlay2; else driver=vfs; fi
fi
start_dockerd "$driver" && exit 0
if [ "$driver" != vfs ] && [ -z "${STORAGE_DRIVER:-}" ]; then
  start_dockerd vfs && exit 0
fi
exit 1
