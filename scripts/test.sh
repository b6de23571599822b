#!/usr/bin/env bash
# Sets up and runs the whole test suite on a fresh Debian machine (as root): installs the servers
# the tests start (redis-server, sshd) and a Docker engine, then cargo fmt, clippy, every test
# against local servers, the core suites against local 3-master clusters, the Airbyte image tests,
# the version matrix (the core suites against Redis and Valkey servers in containers), the
# PyAirbyte + source-faker test, and last, alone, the tests that time work inside Redis.
# Each phase prints its duration. PROPTEST_CASES caps the property tests (default 32).
# DOCKER_TESTS=0 skips everything that needs Docker or PyPI (image, matrix, PyAirbyte).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/docker.sh

t_start=$(date +%s)
phase() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "=== $name"
  "$@"
  echo "=== $name: $(( $(date +%s) - t0 )) s ($(df -h --output=avail / | tail -1 | tr -d ' ') free on /)"
}

install_packages() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
  redis-server --version
}

export PROPTEST_CASES=${PROPTEST_CASES:-32}
export RUST_BACKTRACE=1
DOCKER_TESTS=${DOCKER_TESTS:-1}
work_logs=$(mktemp -d)

# Waits for a background job started by `background`, printing its log; fails when it failed.
background() {
  local name=$1; shift
  ( "$@" ) >"$work_logs/$name.log" 2>&1 &
  eval "bg_$name=$!"
}
await() {
  local name=$1 pid; pid=$(eval "echo \$bg_$name")
  local rc=0; wait "$pid" || rc=$?
  sed 's/^/  /' "$work_logs/$name.log"
  return "$rc"
}

# cargo_test [NAME=VALUE…] ARGS…: `cargo test ARGS…` (with those variables set) and its output also
# kept; when it fails, each failed test's first lines (its panic message) are printed again at the
# end, with the disk and memory left: a CI page may show only a part of a long log, and the reason
# must not be lost in it.
cargo_test() {
  local log="$work_logs/cargo-test.log" rc=0 vars=()
  while [[ ${1:-} == *=* ]]; do vars+=("$1"); shift; done
  env "${vars[@]}" cargo test "$@" 2>&1 | tee "$log" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "--- why the tests failed (the first lines of each failure):"
    awk '/^---- .* stdout ----$/ { n = 5 } n > 0 { print "  " $0; n-- }' "$log" | head -300
    echo "--- disk and memory now:"; df -h / /tmp 2>&1 | sed 's/^/  /'; free -m | sed 's/^/  /'
  fi
  return "$rc"
}

matrix() {
  local m tag
  for m in "${MATRIX[@]}"; do
    tag=$(matrix_tag "$m")
    phase "version matrix: $tag" cargo_test REDIS_IMAGE="$tag" --locked --features docker-tests --test it -- \
      spec_check:: write_append:: overwrite:: properties:: durable:: dedup:: expiry:: formats:: \
      load::any_input load::every_format
  done
  # Valkey will not move a stream's last id back (XSETID below a deleted id): there a resumed
  # Redis stream is rebuilt, a protocol of its own, stopped here at every one of its commands.
  tag=$(matrix_tag sid:valkey-server)
  phase "stops of an overwrite into a Redis stream: $tag" \
    cargo_test REDIS_IMAGE="$tag" --locked --features docker-tests --test it -- \
    overwrite_stops::an_overwrite_into_a_redis_stream
}

phase "install packages" install_packages
if [ "$DOCKER_TESTS" = 1 ]; then
  phase "install docker.io, debootstrap" docker_install
  # errexit holds inside the trap too: a kill of a job that already ended must not skip the rest.
  trap '{ jobs -p | xargs -r kill; } 2>/dev/null || true; docker_down || true; rm -rf "$work_logs"' EXIT
  # Network- and disk-bound work goes on while the Rust code compiles.
  background images base_and_redis_images
  background venvs bash scripts/pyairbyte.sh --venvs-only
  features=(--features docker-tests)
else
  trap 'rm -rf "$work_logs"' EXIT
  features=()
fi
phase "cargo fmt --check" cargo fmt --all -- --check
phase "cargo clippy" cargo clippy --all-targets --locked "${features[@]}" -- -D warnings
# The build without the SSH tunnel (no default features) must not rot.
phase "cargo clippy without default features" \
  cargo clippy --all-targets --locked --no-default-features -- -D warnings
phase "build tests" cargo test --locked "${features[@]}" --no-run
phase "tests" cargo_test --locked "${features[@]}" -- --skip image::
# The core suites again, each test against its own 3-master cluster (tests that need one server's
# own features live in `standalone` modules).
phase "core suites against a 3-master cluster" cargo_test REDIS_TOPOLOGY=cluster --locked "${features[@]}" --test it -- properties:: write_append:: overwrite:: dedup:: expiry:: formats:: \
  load:: operating:: --skip ::standalone::
if [ "$DOCKER_TESTS" = 1 ]; then
  phase "base and Redis images (made in the background)" await images
  phase "destination image (binary from $IMAGE_BINARY)" destination_image
  phase "legacy builder (no BuildKit)" legacy_builder_check
  phase "image tests" cargo_test --locked --features docker-tests --test it -- image::
  matrix
  phase "PyAirbyte venvs (made in the background)" await venvs
  phase "PyAirbyte + source-faker" bash scripts/pyairbyte.sh target/debug/destination-redis
fi
# Last, when no background job is left: timing inside Redis must not share the cores with image
# builds (a fresh machine's background apt-get and vfs copies once pushed a batch past 10 ms).
phase "serial tests (timing inside Redis, the 1M-record load)" cargo_test --locked "${features[@]}" --test it -- --ignored --test-threads=1
echo "=== all phases: $(( $(date +%s) - t_start )) s"
