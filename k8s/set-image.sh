#!/usr/bin/env bash
# Point the kustomize base at an image: what `kustomize edit set image model-serving=IMAGE`
# does, without the kustomize binary (kubectl has none of `edit`).
#
#   k8s/set-image.sh model-serving:<bento version>            # kind, minikube
#   k8s/set-image.sh REGISTRY/model-serving:<bento version>   # a registry
#
# Writes newName and newTag under `images:` in k8s/kustomization.yaml; `kubectl apply -k k8s/`
# then rolls the Deployment out (a new tag changes the pod template). Commit the file to
# keep git saying what runs.
set -euo pipefail

image=${1:?usage: k8s/set-image.sh NAME:TAG (the tag docker/containerize.sh printed)}
name=${image%:*}
tag=${image##*:}
if [ "$name" = "$image" ] || [[ "$tag" == */* ]] || [ -z "$name" ] || [ -z "$tag" ]; then
  echo "set-image.sh: '$image' has no tag; use the one docker/containerize.sh printed" >&2
  exit 2
fi
if ! [[ "$image" =~ ^[A-Za-z0-9._/:-]+$ ]]; then  # an image reference; nothing sed would read as syntax
  echo "set-image.sh: '$image' is not an image reference (letters, digits, . _ / : - only)" >&2
  exit 2
fi
if [ "$tag" = latest ]; then
  echo "set-image.sh: ':latest' never rolls out (the tag does not change); use the bento's version" >&2
  exit 2
fi
file=$(dirname "$0")/kustomization.yaml
grep -q '^    newTag: ' "$file" || { echo "set-image.sh: no images: entry in $file" >&2; exit 1; }
sed -i -E "s|^(    newName: ).*|\1$name|; s|^(    newTag: ).*|\1$tag|" "$file"
echo "k8s/kustomization.yaml: image $name:$tag"
