#!/usr/bin/env bash
# `load` side by side with the server's own limits, against one freshly started redis-server
# (persistence off), on the same N records (default 1,000,000 generated records of about 330
# bytes of JSON data, one stream), each run ROUNDS times (default 3), interleaved:
#   1. destination-redis load of a JSON Lines file of the records' data
#   2. the same file gzipped (decompressed on the fly)
#   3. redis-cli --pipe of one HSET per record (the same fields and values): plain hashes
#   4. redis-cli --pipe of our own append-script EVALSHA batches of the same records (BATCH per
#      batch, default 500): this design's limit
# Medians and the ratios 1/4 (target >= 0.9), 1/3 and 2/1 are printed.
#   bash scripts/bench-load.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-1000000}
ROUNDS=${ROUNDS:-3}
BATCH=${BATCH:-500}

install_missing
cargo build --release --locked --bin destination-redis --example gen_records --example bench_tools 2>&1 | tail -1
setup_work
start_redis
cli() { redis-cli -p "$port" "$@"; }

target/release/examples/gen_records "$N" --streams 1 --state-every "$N" > "$work/in.jsonl"
target/release/examples/bench_tools resp-hset "$work/in.jsonl" "$work/hset.resp"
target/release/examples/bench_tools resp-evalsha "$work/in.jsonl" "$work/evalsha.resp" "$BATCH"
# The records' data alone, one JSON object per line: what a user would load.
python3 - "$work/in.jsonl" "$work/data.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as out:
    for line in src:
        m = json.loads(line)
        if m.get("type") == "RECORD":
            out.write(json.dumps(m["record"]["data"], separators=(",", ":"), ensure_ascii=False) + "\n")
PY
gzip -1 -k "$work/data.jsonl"
echo "{\"host\": \"127.0.0.1\", \"port\": $port, \"batch_size\": $BATCH}" > "$work/config.json"
echo "=== $N records: data $(( $(stat -c %s "$work/data.jsonl") / 1000000 )) MB ($(( $(stat -c %s "$work/data.jsonl.gz") / 1000000 )) MB gzipped); hset pipe $(( $(stat -c %s "$work/hset.resp") / 1000000 )) MB; evalsha pipe $(( $(stat -c %s "$work/evalsha.resp") / 1000000 )) MB"

now() { date +%s.%N; }
results="$work/results.txt"
: > "$results"
fresh() { cli FLUSHALL >/dev/null; cli SCRIPT FLUSH >/dev/null; }
run_load() { # name file
  fresh
  local t0 t1; t0=$(now)
  /usr/bin/time -f "%M" -o "$work/rss" target/release/destination-redis load -q \
    --config "$work/config.json" --namespace demo --stream users "$2"
  t1=$(now)
  local got; got=$(cli GET demo:users)
  [ "$got" -eq "$N" ] || { echo "$1: loaded $got of $N"; exit 1; }
  echo "$1 $(echo "$t1 - $t0" | bc) $(cat "$work/rss")" >> "$results"
}
run_pipe() { # name file
  fresh
  cli -x SCRIPT LOAD < lua/append_batch.lua >/dev/null
  local t0 t1; t0=$(now)
  cli --pipe < "$2" > "$work/pipe.txt"
  t1=$(now)
  grep -q "errors: 0" "$work/pipe.txt" || { echo "$1: $(cat "$work/pipe.txt")"; exit 1; }
  echo "$1 $(echo "$t1 - $t0" | bc) 0" >> "$results"
}
for round in $(seq 1 "$ROUNDS"); do
  echo "=== round $round of $ROUNDS"
  run_load load "$work/data.jsonl"
  run_load load_gzip "$work/data.jsonl.gz"
  run_pipe hset_pipe "$work/hset.resp"
  run_pipe evalsha_pipe "$work/evalsha.resp"
done

python3 - "$results" "$N" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, secs, rss = line.split()
    rows.setdefault(name, []).append((float(secs), int(rss)))
n = int(sys.argv[2])
med = {k: statistics.median(s for s, _ in v) for k, v in rows.items()}
print(f"{'run':<14}{'median s':>10}{'records/s':>12}{'peak RSS MiB':>14}")
for k in ["load", "load_gzip", "hset_pipe", "evalsha_pipe"]:
    rss = max(r for _, r in rows[k]) / 1024
    print(f"{k:<14}{med[k]:>10.3f}{n / med[k]:>12,.0f}{rss:>14.1f}")
print(f"load / evalsha_pipe (throughput): {med['evalsha_pipe'] / med['load']:.3f}")
print(f"load / hset_pipe (throughput):    {med['hset_pipe'] / med['load']:.3f}")
print(f"load_gzip / load (throughput):    {med['load'] / med['load_gzip']:.3f}")
PY
