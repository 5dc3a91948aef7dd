#!/usr/bin/env bash
# The seed's recipe for composing an image from other images' layers, as lamina's README
# describes it: `docker save` each image, untar, copy the layer tars, write a Dockerfile with
# `FROM base` + `ADD layerN.tar /` per layer, and `docker build --network none`.
#
# usage: seed_recipe.sh BASE_IMAGE OUT_TAG WORKDIR SOURCE...
#   SOURCE is an image in the engine (saved first, as the seed does) or a `docker save` archive
#   (*.tar: the save step is skipped). The top layer of each source is taken (lamina's layer=-1).
#   WORKDIR is created and left in place (the caller removes it).
set -euo pipefail

base="$1" out="$2" work="$3"
shift 3
mkdir -p "$work/ctx"
echo "FROM $base" >"$work/ctx/Dockerfile"

top_layer() { # the last entry of manifest.json's Layers
  if command -v jq >/dev/null 2>&1; then jq -r '.[0].Layers[-1]' "$1"
  else python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["Layers"][-1])' "$1"; fi
}

i=0
for src in "$@"; do
  i=$((i + 1))
  if [[ "$src" == *.tar ]]; then
    archive="$src"
  else
    archive="$work/image$i.tar"
    docker save -o "$archive" "$src"
  fi
  mkdir -p "$work/x$i"
  tar -xf "$archive" -C "$work/x$i"
  layer="$(top_layer "$work/x$i/manifest.json")"
  cp "$work/x$i/$layer" "$work/ctx/layer$i.tar"
  echo "ADD layer$i.tar /" >>"$work/ctx/Dockerfile"
done

DOCKER_BUILDKIT=0 docker build --network none --force-rm -t "$out" "$work/ctx"
