# A Docker engine and the images the container tests use, on a machine with no image registry
# (sourced by scripts/test.sh; `bash scripts/docker.sh` alone sets everything up and stops again).
#
#   docker_install       apt-get docker.io and debootstrap when missing
#   docker_up            start dockerd (host networking only, vfs storage) on our own socket
#   base_and_redis_images  base images by debootstrap, then the Redis matrix images
#   docker_images        those, then the destination image
#   docker_down          stop dockerd
#
# The engine's state lives in $DOCKER_STATE (default /var/tmp/destination-redis-docker), so a
# second run on the same machine reuses the images; a fresh machine builds them (about a minute
# for the base images, in parallel, and a few minutes for the destination built from source).

DOCKER_STATE=${DOCKER_STATE:-/var/tmp/destination-redis-docker}
export DOCKER_HOST="unix://$DOCKER_STATE/docker.sock"
# Debian's docker client: its `docker build` has BuildKit built in (a newer client needs buildx).
DOCKER=/usr/bin/docker
export DOCKER
export DOCKER_BUILDKIT=1
# The image under test, and how its binary is made: `source` (the Dockerfile's own build stage,
# with Debian's rustc-web and the crates vendored into the context) or `prebuilt`
# (target/release/destination-redis built on this bookworm host).
DESTINATION_IMAGE=${DESTINATION_IMAGE:-destination-redis:test}
export DESTINATION_IMAGE
IMAGE_BINARY=${IMAGE_BINARY:-source}
# The version matrix: <Debian suite>:<package> -> local/redis:<suite>[-valkey].
MATRIX=(bullseye:redis-server trixie:redis-server trixie:valkey-server sid:redis-server sid:valkey-server)

docker_install() {
  local need=()
  [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ] || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

docker_up() {
  mkdir -p "$DOCKER_STATE"/{data,exec}
  if ! "$DOCKER" version >/dev/null 2>&1; then
    # No bridge and no iptables: containers use --network host (loopback ports of this machine).
    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
      --data-root "$DOCKER_STATE/data" --exec-root "$DOCKER_STATE/exec" \
      --pidfile "$DOCKER_STATE/dockerd.pid" -H "$DOCKER_HOST" >"$DOCKER_STATE/dockerd.log" 2>&1 &
    local i
    for i in $(seq 1 150); do
      "$DOCKER" version >/dev/null 2>&1 && break
      [ "$i" = 150 ] && { tail -20 "$DOCKER_STATE/dockerd.log"; return 1; }
      sleep 0.2
    done
  fi
  "$DOCKER" version --format 'Docker engine {{.Server.Version}} at '"$DOCKER_HOST"
}

# Stops our engine: the one in the pidfile, and any dockerd on our data root (a run that failed
# while a background job was starting it may not have written the pidfile yet).
docker_down() {
  local pids pid i
  pids=$(pgrep -f -- "--data-root $DOCKER_STATE/data" || true)
  [ -f "$DOCKER_STATE/dockerd.pid" ] && pids="$pids $(cat "$DOCKER_STATE/dockerd.pid")"
  for pid in $pids; do
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}

has_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# debian:<suite>-slim from Debian's own packages (no registry): debootstrap, then docker import.
base_image() {
  local suite=$1 root="$DOCKER_STATE/roots/$1"
  has_image "debian:$suite-slim" && return 0
  unmount_below "$root"; rm -rf "$root"; mkdir -p "$root"
  debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian \
    >"$DOCKER_STATE/debootstrap-$suite.log" 2>&1 \
    || { tail -20 "$DOCKER_STATE/debootstrap-$suite.log"; return 1; }
  # debootstrap mounts the host's /proc (and sometimes /sys) inside the root while it configures
  # packages; one left mounted (seen on a CI machine) must neither go into the image nor stop rm.
  unmount_below "$root"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --one-file-system -c . | "$DOCKER" import - "debian:$suite-slim" >/dev/null
  unmount_below "$root"
  # The image is made: a root that cannot be removed is worth a line, not a failed run.
  if ! rm -rf "$root" 2>/dev/null; then
    echo "could not remove all of $root; mounted below it:" $(mounts_below "$root")
  fi
  echo "made debian:$suite-slim"
}

# The mount points at or below a directory, deepest first.
mounts_below() {
  local dir; dir=$(realpath -m "$1")
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

# Lazily unmounts every mount at or below a directory, deepest first.
unmount_below() {
  local m
  for m in $(mounts_below "$1"); do umount -l "$m" 2>/dev/null || true; done
}

matrix_tag() {
  local suite=${1%%:*} package=${1#*:}
  if [ "$package" = valkey-server ]; then echo "local/redis:$suite-valkey"; else echo "local/redis:$suite"; fi
}

redis_image() {
  local suite=${1%%:*} package=${1#*:} tag; tag=$(matrix_tag "$1")
  has_image "$tag" && return 0
  "$DOCKER" build -q --network host --build-arg SUITE="$suite" --build-arg PACKAGE="$package" \
    -t "$tag" docker/redis >/dev/null
  echo "made $tag: $("$DOCKER" run --rm --network host "$tag" sh -c "${package} --version")"
}

destination_image() {
  local version; version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
  if [ "$IMAGE_BINARY" = source ]; then
    # The build container cannot reach crates.io here: hand it the crates in the context.
    cargo vendor --locked --versioned-dirs vendor >/dev/null
  else
    cargo build --release --locked --bin destination-redis
  fi
  "$DOCKER" build --network host --build-arg BINARY="$IMAGE_BINARY" --build-arg VERSION="$version" \
    -t "$DESTINATION_IMAGE" . >"$DOCKER_STATE/destination-build.log" 2>&1 \
    || { tail -40 "$DOCKER_STATE/destination-build.log"; return 1; }
  echo "made $DESTINATION_IMAGE (binary from $IMAGE_BINARY, version $version)"
}

# The legacy builder (no BuildKit) builds every stage of the Dockerfile: its `prebuilt` stage must
# build in a context without a binary (a context of the Dockerfile and Cargo.toml alone), and the
# `source` stage must not be needed to get there. Seconds, not a second image build.
legacy_builder_check() {
  local ctx; ctx=$(mktemp -d)
  cp Dockerfile Cargo.toml "$ctx"/
  DOCKER_BUILDKIT=0 "$DOCKER" build --target prebuilt -t destination-redis:legacy-check "$ctx" \
    >"$DOCKER_STATE/legacy-build.log" 2>&1 \
    || { tail -20 "$DOCKER_STATE/legacy-build.log"; rm -rf "$ctx"; return 1; }
  rm -rf "$ctx"
  grep -q "Step 2/" "$DOCKER_STATE/legacy-build.log" \
    || { echo "the legacy builder was not used"; tail -5 "$DOCKER_STATE/legacy-build.log"; return 1; }
  "$DOCKER" image rm destination-redis:legacy-check >/dev/null
  echo "the legacy builder builds the prebuilt stage without a binary"
}

# Base images in parallel (network-bound), then the Redis matrix images (starts the engine if needed).
base_and_redis_images() {
  docker_up
  local pids=() suite failed=0
  for suite in bookworm bullseye trixie sid; do base_image "$suite" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || return 1
  local m
  for m in "${MATRIX[@]}"; do redis_image "$m"; done
}

# Every image: the base and Redis images, then the destination image.
docker_images() {
  base_and_redis_images
  destination_image
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  docker_install
  docker_up
  trap docker_down EXIT
  docker_images
fi
