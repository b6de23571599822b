#!/usr/bin/env bash
# Cluster scale-out benchmark: the same N generated records (default 1,000,000, about 330 bytes of
# JSON data each) over 6 streams, written by destination-redis in cluster mode to
#   A. a 1-master cluster (one node owning all 16384 slots, CLUSTER ADDSLOTSRANGE)
#   B. a 3-master cluster (redis-cli --cluster create; the 6 streams' hash tags spread over them)
# Persistence off on every node. Runs alternate A, B for ROUNDS rounds (default 3); medians and the
# B/A throughput ratio are printed, with how many streams each master of B holds, and the CPU time the
# servers and the destination used per run (on a machine with few cores, that is the ceiling).
#   bash scripts/bench-cluster.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-1000000}
ROUNDS=${ROUNDS:-3}
STREAMS=6

install_missing
cargo build --release --locked --bin destination-redis --example gen_records 2>&1 | tail -1

work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# A free port below 55536 whose cluster bus port (+10000) is free too.
cluster_port() {
  python3 - <<'PY'
import socket
for _ in range(1000):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p > 55535:
        continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 10000)); b.close(); print(p); break
    except OSError:
        pass
PY
}

# Starts a cluster-enabled node in its own dir; sets $node_port.
start_node() {
  local dir
  node_port=$(cluster_port)
  dir="$work/node-$node_port"; mkdir -p "$dir"
  redis-server --port "$node_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --logfile "$dir/redis.log" \
    --daemonize no >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 1 250); do redis-cli -p "$node_port" PING >/dev/null 2>&1 && return 0; sleep 0.02; done
  echo "node on $node_port did not start"; return 1
}

wait_ok() { # port
  for _ in $(seq 1 300); do
    redis-cli -p "$1" CLUSTER INFO | grep -q 'cluster_state:ok' && return 0
    sleep 0.1
  done
  echo "cluster at $1 did not become ok"; return 1
}

start_node; one=$node_port
redis-cli -p "$one" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
wait_ok "$one"
three=(); for _ in 1 2 3; do start_node; three+=("$node_port"); done
redis-cli --cluster create "${three[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
wait_ok "${three[0]}"
for p in "${three[@]}"; do wait_ok "$p"; done

names=(users orders events stream3 stream4 stream5)
append_catalog "$work/catalog.json" "${names[@]}"
echo "{\"host\": \"127.0.0.1\", \"port\": $one, \"topology\": {\"mode\": \"cluster\"}}" > "$work/one.json"
echo "{\"host\": \"127.0.0.1\", \"port\": ${three[0]}, \"topology\": {\"mode\": \"cluster\"}}" > "$work/three.json"
target/release/examples/gen_records "$N" --streams "$STREAMS" --state-every 1000 > "$work/in.jsonl"

echo "=== inputs: $N records, $STREAMS streams; where the streams live in the 3-master cluster:"
for s in "${names[@]}"; do
  slot=$(redis-cli -p "${three[0]}" CLUSTER KEYSLOT "{demo:$s}")
  owner=$(redis-cli -p "${three[0]}" CLUSTER SLOTS | python3 -c '
import sys
lines = [l.strip() for l in sys.stdin if l.strip()]
# redis-cli prints each range as: start, end, host, port, id, ...; find the range holding the slot.
slot = int(sys.argv[1]); i = 0
while i + 3 < len(lines):
    if lines[i].isdigit() and lines[i + 1].isdigit() and int(lines[i]) <= slot <= int(lines[i + 1]):
        print(lines[i + 3]); break
    i += 1
' "$slot")
  echo "  {demo:$s} slot $slot on port $owner"
done

now() { date +%s.%N; }
results="$work/results.txt"; : > "$results"
flush() { for p in "$@"; do redis-cli -p "$p" FLUSHALL >/dev/null; done; }
count() { # port... → records over the six counters (each read on any node with -c)
  local total=0 s
  for s in "${names[@]}"; do total=$((total + $(redis-cli -c -p "$1" GET "{demo:$s}"))); done
  echo "$total"
}
server_cpu() { # ports... → CPU seconds (user + sys) the servers used so far
  local total=0 p
  for p in "$@"; do
    total=$(echo "$total + $(redis-cli -p "$p" INFO cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {print s}')" | bc)
  done
  echo "$total"
}
run() { # name config ports...
  local name=$1 config=$2; shift 2
  flush "$@"
  local t0 t1 c0 c1; c0=$(server_cpu "$@"); t0=$(now)
  /usr/bin/time -f "%U %S" -o "$work/cpu" target/release/destination-redis write --config "$config" \
    --catalog "$work/catalog.json" < "$work/in.jsonl" > "$work/out.jsonl"
  t1=$(now); c1=$(server_cpu "$@")
  local got; got=$(count "$1")
  [ "$got" -eq "$N" ] || { echo "$name: wrote $got of $N"; tail -3 "$work/out.jsonl"; exit 1; }
  echo "$name $(echo "$t1 - $t0" | bc) $(echo "$c1 - $c0" | bc) $(awk '{print $1 + $2}' "$work/cpu")" >> "$results"
}
for round in $(seq 1 "$ROUNDS"); do
  echo "=== round $round of $ROUNDS"
  run one_master "$work/one.json" "$one"
  run three_masters "$work/three.json" "${three[@]}"
done
python3 - "$results" "$N" <<'PY'
import statistics, sys
import os
runs, cpu = {}, {}
for line in open(sys.argv[1]):
    name, secs, servers, dest = line.split()
    runs.setdefault(name, []).append(float(secs))
    cpu.setdefault(name, []).append((float(servers), float(dest)))
n = int(sys.argv[2])
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"machine: {os.cpu_count()} cores")
for k, label in (("one_master", "A  1 master "), ("three_masters", "B  3 masters")):
    srv = statistics.median(c[0] for c in cpu[k])
    dst = statistics.median(c[1] for c in cpu[k])
    print(f"{label}  median {med[k]:7.3f} s  {n / med[k]:11,.0f} records/s  runs {[round(x, 2) for x in runs[k]]}"
          f"  CPU: servers {srv:.2f} s + destination {dst:.2f} s = {(srv + dst) / med[k]:.2f} cores busy")
pairs = [a / b for a, b in zip(runs["one_master"], runs["three_masters"])]
print(f"throughput ratio B/A (3 masters / 1 master): median {statistics.median(pairs):.2f} (per round: {[round(p, 2) for p in pairs]})")
PY
