#!/usr/bin/env bash
# A real demo load, end to end, on a fresh Debian machine (as root):
# installs redis-server/redis-tools if missing, builds the release binary, starts its own redis-server
# on a free loopback port (unless REDIS_HOST/REDIS_PORT are set), loads N generated Airbyte records
# (default 100,000) over 3 streams with a state every 1,000 records, and prints what it wrote, how
# fast, the destination's peak memory, and a few records read back.
#   bash scripts/demo.sh [N]
# With MODE=overwrite the streams are written by overwrite (staged, then published); run it after a
# first (append) demo to see the replacement, and the time each publish took.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-100000}
MODE=${MODE:-append}
STREAMS=${STREAMS:-3}

phase_start=$(date +%s.%N)
phase() { # phase NAME: prints the previous phase's duration, then the new name
  local now; now=$(date +%s.%N)
  [ -n "${current_phase:-}" ] && printf '    (%s: %.1f s)\n' "$current_phase" "$(echo "$now - $phase_start" | bc)"
  current_phase=$1; phase_start=$now
  echo "=== $1"
}

phase "install packages"
install_missing

phase "build (release)"
cargo build --release --locked --bin destination-redis --example gen_records 2>&1 | tail -1

setup_work

phase "start redis-server"
if [ -n "${REDIS_HOST:-}" ]; then
  host=$REDIS_HOST; port=${REDIS_PORT:-6379}
  echo "using the server at $host:$port"
else
  host=127.0.0.1
  start_redis
  echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on $host:$port (persistence off)"
fi
cli() { redis-cli -h "$host" -p "$port" "$@"; }
count() { local v; v=$(cli GET "$1"); echo "${v:-0}"; }

cat > "$work/config.json" <<JSON
{"host": "$host", "port": $port}
JSON
names=(users orders events)
names=("${names[@]:0:$STREAMS}")
{
  echo '{"streams": ['
  sep=""
  for s in "${names[@]}"; do
    printf '%s{"stream": {"name": "%s", "namespace": "demo", "json_schema": {}}, "sync_mode": "full_refresh", "destination_sync_mode": "%s"}\n' "$sep" "$s" "$MODE"
    sep=","
  done
  echo ']}'
} > "$work/catalog.json"

phase "generate $N records"
before=0
for s in "${names[@]}"; do before=$(( before + $(count "demo:$s") )); done
target/release/examples/gen_records "$N" --streams "$STREAMS" --state-every 1000 > "$work/input.jsonl"
input_bytes=$(stat -c %s "$work/input.jsonl")
echo "$(wc -l < "$work/input.jsonl") lines, $((input_bytes / 1024 / 1024)) MiB"

if [ "$MODE" = overwrite ]; then
  phase "first load of the same records by append (so the overwrite replaces them)"
  sed 's/"destination_sync_mode": "overwrite"/"destination_sync_mode": "append"/' "$work/catalog.json" > "$work/append.json"
  target/release/destination-redis write --config "$work/config.json" --catalog "$work/append.json" \
    < "$work/input.jsonl" > /dev/null
  before=0
fi

phase "write ($MODE)"
start=$(date +%s.%N)
/usr/bin/time -v -o "$work/time.txt" target/release/destination-redis write \
  --config "$work/config.json" --catalog "$work/catalog.json" < "$work/input.jsonl" > "$work/output.jsonl"
end=$(date +%s.%N)

phase "report"
secs=$(echo "$end - $start" | bc)
after=0
for s in "${names[@]}"; do after=$(( after + $(count "demo:$s") )); done
written=$(( after - before ))
rss_kb=$(grep 'Maximum resident set size' "$work/time.txt" | grep -o '[0-9]*$')
states=$(grep -c '"type":"STATE"' "$work/output.jsonl" || true)
printf 'records written:   %d (mode %s; counters:' "$written" "$MODE"
for s in "${names[@]}"; do printf ' %s %s' "$s" "$(cli GET "demo:$s")"; done
echo ')'
printf 'time:              %.2f s\n' "$secs"
printf 'throughput:        %.0f records/s, %.1f MB/s of input\n' "$(echo "$written / $secs" | bc -l)" \
  "$(echo "$input_bytes / 1000000 / $secs" | bc -l)"
printf 'peak RSS:          %.1f MiB (destination process)\n' "$(echo "$rss_kb / 1024" | bc -l)"
printf 'states echoed:     %d\n' "$states"
grep -o 'Published stream .* ms ([0-9]* script calls)' "$work/output.jsonl" | sed 's/\\"/"/g; s/^/publish:           /' || true
[ "$written" -eq "$N" ] || { echo "expected $N records, found $written"; exit 1; }
echo "--- a few records read back:"
last=${names[-1]}
for key in "demo:${names[0]}:1" "demo:$last:$(cli GET "demo:$last")"; do
  echo "HGETALL $key"
  cli HGETALL "$key" | sed 's/^/    /'
done
phase "done"
