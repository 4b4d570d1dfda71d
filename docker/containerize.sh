#!/usr/bin/env bash
# Build the bento (service + the served version of each model from $BENTOML_HOME) and its image.
#
#   docker/containerize.sh [IMAGE:TAG]     # default: the bento's tag, model-serving:<bento version>
#   OFFLINE_BASE_IMAGE=local/python-base:bookworm docker/containerize.sh
#
# Every build gets a new bento version, so a new image tag: a node that cached the last
# image cannot keep serving it under the same name, and the Deployment sees a change.
# Normal machines: the service's RUNTIME_IMAGE (service/service.py: python:3.11-slim as it is).
# Offline (OFFLINE_BASE_IMAGE set): the same bentofile.yaml with docker.base_image set to
# that image (see docker/offline-base.sh), written to a temporary copy; nothing else
# differs. The build uses the host network (--opt network=host) when offline or when
# BUILD_NETWORK=host, since engines started by docker/engine.sh have no bridge.
#
# Env: BENTOML (CLI, default .venv/bin/bentoml, else on PATH), BENTOML_HOME (the store with
# the models), DOCKER_HOST. Last stdout lines (key=value): bento, image, build_seconds,
# containerize_seconds, image_size_bytes.
set -euo pipefail

PROJECT=$(cd "$(dirname "$0")/.." && pwd)
cd "$PROJECT"
if [ -z "${BENTOML:-}" ]; then
  if [ -x .venv/bin/bentoml ]; then BENTOML=.venv/bin/bentoml; else BENTOML=$(command -v bentoml); fi
fi
PYTHON=$(dirname "$BENTOML")/python
export BENTOML_DO_NOT_TRACK=${BENTOML_DO_NOT_TRACK:-True}
# BentoML turns BuildKit on; a docker CLI without the buildx plugin then fails, Debian's
# /usr/bin/docker (20.10) builds fine: put it first.
export PATH="/usr/bin:$PATH"

bentofile=bentofile.yaml
network=${BUILD_NETWORK:-}
if [ -n "${OFFLINE_BASE_IMAGE:-}" ]; then
  bentofile=$(mktemp /tmp/bentofile.offline.XXXXXX.yaml)
  trap 'rm -f "$bentofile"' EXIT
  "$PYTHON" - "$OFFLINE_BASE_IMAGE" "$bentofile" <<'PY'
import sys

import yaml

with open("bentofile.yaml") as source:
    config = yaml.safe_load(source)
config.setdefault("docker", {})["base_image"] = sys.argv[1]
with open(sys.argv[2], "w") as target:
    yaml.safe_dump(config, target, sort_keys=False)
PY
  network=${network:-host}
  echo "containerize.sh: base image $OFFLINE_BASE_IMAGE" >&2
fi

started=$(date +%s.%N)
bento=$("$BENTOML" build -f "$bentofile" -o tag . | sed -n 's/^__tag__://p' | tail -n 1)
[ -n "$bento" ] || { echo "containerize.sh: bentoml build gave no tag" >&2; exit 1; }
built=$(date +%s.%N)
echo "containerize.sh: built $bento" >&2
IMAGE=${1:-$bento}

options=()
[ -n "$network" ] && options+=(--opt "network=$network")
"$BENTOML" containerize "$bento" "${options[@]}" -t "$IMAGE" >&2
done_at=$(date +%s.%N)

echo "bento=$bento"
echo "image=$IMAGE"
echo "build_seconds=$(awk "BEGIN {print $built - $started}")"
echo "containerize_seconds=$(awk "BEGIN {print $done_at - $built}")"
echo "image_size_bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")"
