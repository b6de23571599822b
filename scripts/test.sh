#!/usr/bin/env bash
# Sets up and runs the whole test suite on a fresh Debian machine (as root):
# installs the servers the tests start (redis-server, sshd), then cargo fmt, clippy and every test.
# Each phase prints its duration. PROPTEST_CASES caps the property tests (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."

t_start=$(date +%s)
phase() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "=== $name"
  "$@"
  echo "=== $name: $(( $(date +%s) - t0 )) s"
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

phase "install packages" install_packages
phase "cargo fmt --check" cargo fmt --all -- --check
phase "cargo clippy" cargo clippy --all-targets --locked -- -D warnings
phase "build tests" cargo test --locked --no-run
phase "tests" cargo test --locked
phase "serial tests (timing inside Redis, the 1M-record load)" cargo test --locked --test it -- --ignored --test-threads=1
echo "=== all phases: $(( $(date +%s) - t_start )) s"
