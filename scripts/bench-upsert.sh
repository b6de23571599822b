#!/usr/bin/env bash
# Upserts against append on the same data, side by side in one run: N generated records (3
# streams, a state every 1,000, unique "id", cursor "created_at") written by the release binary
#   append       into an empty database;
#   dedup-insert as append_dedup (primary key id) into an empty database: every key new;
#   dedup-update as append_dedup over the same records already loaded: every key replaced in place;
#   keyed-insert as append_dedup with record_key primary_key into an empty database.
# ROUNDS rounds (append, insert, update in turn; pairs cancel the machine's drift), one freshly
# started redis-server (persistence off). Prints each run, the medians, the per-pair ratios, and
# the memory the index costs per record (used_memory after the dedup load minus after the append
# load, and MEMORY USAGE of one stream's index, per record).
#   bash scripts/bench-upsert.sh [N]          (N=300000, ROUNDS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-300000}
ROUNDS=${ROUNDS:-5}

install_missing
cargo build --release --locked --bin destination-redis --example gen_records 2>&1 | tail -1
setup_work
start_redis
trap 'if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
bin=target/release/destination-redis

append_catalog "$work/append.json" users orders events
python3 - "$work/append.json" "$work/dedup.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for s in c["streams"]:
    s.update(destination_sync_mode="append_dedup", primary_key=[["id"]], cursor_field=["created_at"])
json.dump(c, open(sys.argv[2], "w"))
PY
echo "{\"host\": \"127.0.0.1\", \"port\": $port}" > "$work/config.json"
echo "{\"host\": \"127.0.0.1\", \"port\": $port, \"record_key\": \"primary_key\"}" > "$work/keyed.json"
target/release/examples/gen_records "$N" --streams 3 --state-every 1000 > "$work/in.jsonl"

# write CATALOG [CONFIG]: one sync of the input; fails if it does.
write() {
  "$bin" write --config "$work/${2:-config.json}" --catalog "$work/$1" < "$work/in.jsonl" > "$work/out.jsonl"
  grep -q '"Wrote '"$N"' records' "$work/out.jsonl" || { tail -3 "$work/out.jsonl" >&2; return 1; }
}
# timed CATALOG [preload|CONFIG]: seconds of one sync into a flushed database (loaded once first,
# untimed, with "preload").
timed() {
  redis-cli -p "$port" FLUSHALL >/dev/null
  local config=config.json
  case "${2:-}" in preload) write "$1" ;; "") ;; *) config=$2 ;; esac
  local t0 t1
  t0=$(date +%s.%N); write "$1" "$config"; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

timed append.json >/dev/null && timed dedup.json >/dev/null   # warm-up, not counted
a=(); i=(); u=(); k=()
for r in $(seq 1 "$ROUNDS"); do
  a+=("$(timed append.json)"); i+=("$(timed dedup.json)"); u+=("$(timed dedup.json preload)")
  k+=("$(timed dedup.json keyed.json)")
  printf 'round %d: append %.3f s, dedup-insert %.3f s, dedup-update %.3f s, keyed-insert %.3f s\n' \
    "$r" "${a[-1]}" "${i[-1]}" "${u[-1]}" "${k[-1]}"
done

redis-cli -p "$port" FLUSHALL >/dev/null
base=$(redis-cli -p "$port" INFO memory | awk -F: '/^used_memory:/{print $2+0}')
write append.json
appended=$(redis-cli -p "$port" INFO memory | awk -F: '/^used_memory:/{print $2+0}')
redis-cli -p "$port" FLUSHALL >/dev/null
write dedup.json
deduped=$(redis-cli -p "$port" INFO memory | awk -F: '/^used_memory:/{print $2+0}')
index=$(redis-cli -p "$port" MEMORY USAGE "_airbyte_redis:index:demo:users" SAMPLES 0)
users=$(redis-cli -p "$port" HLEN "_airbyte_redis:index:demo:users")

python3 - "$N" "${a[*]}" "${i[*]}" "${u[*]}" "${k[*]}" "$base" "$appended" "$deduped" "$index" "$users" <<'PY'
import statistics, sys
n = int(sys.argv[1])
a, i, u, k = ([float(x) for x in arg.split()] for arg in sys.argv[2:6])
base, appended, deduped, index, users = (int(x) for x in sys.argv[6:11])
for name, t in (("append", a), ("dedup-insert", i), ("dedup-update", u), ("keyed-insert", k)):
    print(f"{name}: median {statistics.median(t):.3f} s ({n / statistics.median(t):,.0f} records/s)")
for name, t in (("dedup-insert", i), ("dedup-update", u), ("keyed-insert", k)):
    r = [x / y for x, y in zip(a, t)]
    print(f"{name} speed / append speed per pair: median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})")
print(f"memory: append {(appended - base) / n:.0f} B/record, append_dedup {(deduped - base) / n:.0f} B/record: "
      f"the index costs {(deduped - appended) / n:.0f} B/record (MEMORY USAGE of one index: {index / users:.0f} B per entry, {users} entries)")
PY
