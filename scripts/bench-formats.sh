#!/usr/bin/env bash
# The value formats and expiry against the default hash format on the same data, side by side in
# one run: N generated records (3 streams, a state every 1,000) written by the release binary into
# an empty database as
#   hash       the default (the Java layout: _airbyte_ab_id, _airbyte_emitted_at, _airbyte_data);
#   fields     one hash field per data field;
#   string     the data's JSON text;
#   stream     XADD into one Redis stream per catalog stream;
#   hash+ttl   hash with ttl_seconds (an EXPIRE per record in the same script call);
#   string+ttl string with ttl_seconds.
# ROUNDS rounds (every variant in turn; pairs cancel the machine's drift), one freshly started
# redis-server (persistence off). Prints each run, the medians, each variant's speed relative to
# hash per pair, and the memory per record of each (used_memory after the load minus before, on a
# flushed database).
#   bash scripts/bench-formats.sh [N]          (N=200000, ROUNDS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-200000}
ROUNDS=${ROUNDS:-5}
VARIANTS=(hash fields string stream hash+ttl string+ttl)

install_missing
cargo build --release --locked --bin destination-redis --example gen_records 2>&1 | tail -1
setup_work
start_redis
trap 'if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
bin=target/release/destination-redis

append_catalog "$work/catalog.json" users orders events
for v in "${VARIANTS[@]}"; do
  format=${v%+ttl}
  ttl=""; [ "$v" != "$format" ] && ttl=', "ttl_seconds": 86400'
  echo "{\"host\": \"127.0.0.1\", \"port\": $port, \"value_format\": \"$format\"$ttl}" > "$work/$v.json"
done
target/release/examples/gen_records "$N" --streams 3 --state-every 1000 > "$work/in.jsonl"

used() { redis-cli -p "$port" INFO memory | awk -F: '/^used_memory:/{print $2+0}'; }
# timed VARIANT: seconds of one sync into a flushed database; its memory per record goes to
# $work/VARIANT.mem.
timed() {
  redis-cli -p "$port" FLUSHALL >/dev/null
  local before t0 t1; before=$(used)
  t0=$(date +%s.%N)
  "$bin" write --config "$work/$1.json" --catalog "$work/catalog.json" < "$work/in.jsonl" > "$work/out.jsonl"
  t1=$(date +%s.%N)
  grep -q '"Wrote '"$N"' records' "$work/out.jsonl" || { tail -3 "$work/out.jsonl" >&2; return 1; }
  echo "($(used) - $before) / $N" | bc -l > "$work/$1.mem"
  echo "$t1 - $t0" | bc -l
}

for v in "${VARIANTS[@]}"; do timed "$v" >/dev/null; done   # warm-up, not counted
declare -A times
for r in $(seq 1 "$ROUNDS"); do
  line="round $r:"
  for v in "${VARIANTS[@]}"; do
    t=$(timed "$v"); times[$v]="${times[$v]:-} $t"
    line="$line $v $(printf '%.3f' "$t") s,"
  done
  echo "${line%,}"
done

args=()
for v in "${VARIANTS[@]}"; do args+=("$v" "${times[$v]}" "$(cat "$work/$v.mem")"); done
python3 - "$N" "${args[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
rest = sys.argv[2:]
runs = {rest[i]: ([float(x) for x in rest[i + 1].split()], float(rest[i + 2])) for i in range(0, len(rest), 3)}
base = runs["hash"][0]
print(f"{'variant':<11} {'median s':>9} {'records/s':>10} {'speed/hash (min..max)':>24} {'B/record':>9}")
for name, (t, mem) in runs.items():
    r = [b / x for b, x in zip(base, t)]
    m = statistics.median(t)
    print(f"{name:<11} {m:>9.3f} {n / m:>10,.0f} {statistics.median(r):>10.3f} ({min(r):.3f}..{max(r):.3f}) {mem:>9.0f}")
PY
