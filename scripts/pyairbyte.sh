#!/usr/bin/env bash
# PyAirbyte with the real source-faker into destination-redis, against a local redis-server.
#
#   bash scripts/pyairbyte.sh [destination binary]    # default target/debug/destination-redis
#   bash scripts/pyairbyte.sh --venvs-only            # only make the virtualenvs (CI, in advance)
#
# Two virtualenvs from PyPI (PyAirbyte and source-faker pin different airbyte-cdk versions), kept in
# $PYAIRBYTE_VENVS (default ~/.cache/destination-redis/pyairbyte) and remade when a pin changes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

AIRBYTE_VERSION=0.71.3
FAKER_VERSION=7.2.1
REDIS_PY_VERSION=5.2.1
venvs=${PYAIRBYTE_VENVS:-$HOME/.cache/destination-redis/pyairbyte}

# make_venv DIR PACKAGE...: a virtualenv with exactly these pins (remade when they differ).
make_venv() {
  local dir=$1; shift
  local want="$*"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.pins" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$dir/.pins"
}

make_venvs() {
  local t0; t0=$(date +%s)
  mkdir -p "$venvs"
  make_venv "$venvs/airbyte" "airbyte==$AIRBYTE_VERSION" "redis==$REDIS_PY_VERSION" &
  local a=$!
  make_venv "$venvs/faker" "airbyte-source-faker==$FAKER_VERSION" &
  local f=$!
  wait "$a"; wait "$f"
  echo "virtualenvs ready in $(( $(date +%s) - t0 )) s: airbyte $AIRBYTE_VERSION, airbyte-source-faker $FAKER_VERSION ($venvs)"
}

if [ "${1:-}" = --venvs-only ]; then
  make_venvs
  exit 0
fi

binary=$(realpath "${1:-target/debug/destination-redis}")
[ -x "$binary" ] || cargo build --locked
install_missing
make_venvs
setup_work
start_redis
t0=$(date +%s)
AIRBYTE_OFFLINE_MODE=1 DO_NOT_TRACK=1 "$venvs/airbyte/bin/python" tests/pyairbyte/test_faker.py \
  "$binary" "$venvs/faker/bin/source-faker" "$port"
echo "PyAirbyte test: $(( $(date +%s) - t0 )) s"
