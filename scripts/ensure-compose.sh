#!/usr/bin/env bash
# Build Docker Compose v2 (the `docker compose` CLI plugin) from its Go module
# once, cache it, and print the path of a directory usable as DOCKER_CONFIG in
# which `docker compose` works (cli-plugins/docker-compose). Used to validate
# otel-collector/docker-compose.yml with `docker compose config`, which needs
# no Docker engine:
#   DOCKER_CONFIG=$(scripts/ensure-compose.sh) docker compose -f otel-collector/docker-compose.yml config -q
#   COMPOSE_VERSION  default v2.40.3
set -euo pipefail
version=${COMPOSE_VERSION:-v2.40.3}
bin=$("$(dirname "$0")/ensure-go-binary.sh" docker-compose github.com/docker/compose/v2 "$version" ./cmd)
dir=$(dirname "$bin")
mkdir -p "$dir/cli-plugins"
ln -sf "$bin" "$dir/cli-plugins/docker-compose"
echo "$dir"
