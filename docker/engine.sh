#!/usr/bin/env bash
# Make sure a Docker engine answers; print the DOCKER_HOST to use on stdout.
#
# Tries $DOCKER_HOST, /var/run/docker.sock and our own socket in $DOCKERD_ROOT. If none
# answers, installs docker.io (apt, as root) and starts dockerd the way that works on
# machines without a bridge, iptables or overlayfs (vfs storage, host networking only):
# see /work/shared/notes/containers.md. A second stdout line "started <pid>" says that
# this call started the daemon (stop it with `kill <pid>` when done).
#
#   export DOCKER_HOST=$(docker/engine.sh | sed -n 1p)
set -euo pipefail

DOCKERD_ROOT=${DOCKERD_ROOT:-/tmp/dockerd}
OWN_HOST="unix://$DOCKERD_ROOT/docker.sock"

cli() {  # Debian's docker CLI (with BuildKit) first; see containers.md
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

mkdir -p "$DOCKERD_ROOT"
echo "engine.sh: starting dockerd (vfs, no bridge) on $OWN_HOST, log $DOCKERD_ROOT/dockerd.log" >&2
setsid nohup dockerd --storage-driver=vfs --iptables=false --bridge=none \
  --data-root="$DOCKERD_ROOT/root" --exec-root="$DOCKERD_ROOT/exec" \
  -H "$OWN_HOST" --pidfile "$DOCKERD_ROOT/pid" \
  >"$DOCKERD_ROOT/dockerd.log" 2>&1 </dev/null &
pid=$!

for _ in $(seq 1 120); do
  if answers "$OWN_HOST"; then
    echo "$OWN_HOST"
    echo "started $pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "engine.sh: dockerd exited:" >&2
    tail -n 30 "$DOCKERD_ROOT/dockerd.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "engine.sh: dockerd did not answer within 60 s:" >&2
tail -n 30 "$DOCKERD_ROOT/dockerd.log" >&2
exit 1
