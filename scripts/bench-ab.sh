#!/usr/bin/env bash
# Two builds of the destination side by side, for a change that must not cost speed (a reshaping):
# the same N generated records (3 streams, a state every 1,000) written by binary A and binary B in
# turn, ROUNDS times each (A B A B ...), into one freshly started redis-server (persistence off,
# flushed before every run). Prints every run, the medians, and the median of the per-pair ratios
# A/B (pairs cancel the machine's drift; above 1 means A is slower).
#   bash scripts/bench-ab.sh A_BINARY B_BINARY [N]      (ROUNDS=7 by default)
# B_CONFIG='"metrics_file": "/tmp/m.prom", "progress_interval_ms": 1000' adds config fields for B
# alone (e.g. the cost of progress lines and the metrics file, against a build without them).
# TUNNEL=1 sends both through an SSH tunnel (a throwaway sshd on loopback), for a change to the
# tunnel; the plain connection is then timed too, for the tunnel/plain ratio of each build.
# For example, the binary of an older commit against this one:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bin destination-redis)
#   bash scripts/bench-ab.sh /tmp/old/target/release/destination-redis target/release/destination-redis
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
A=$(realpath "$1")
B=$(realpath "$2")
N=${3:-300000}
ROUNDS=${ROUNDS:-7}

install_missing
cargo build --release --locked --example gen_records 2>&1 | tail -1
setup_work
start_redis
TUNNEL=${TUNNEL:-0}
if [ "$TUNNEL" = 1 ]; then start_sshd; fi
trap 'if [ "$TUNNEL" = 1 ]; then stop_sshd; fi; if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

append_catalog "$work/catalog.json" users orders events
via=""
if [ "$TUNNEL" = 1 ]; then
  via=$(python3 -c 'import json, sys; print(", \"tunnel_method\": " + json.dumps({"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "127.0.0.1", "tunnel_port": int(sys.argv[1]), "tunnel_user": "root", "ssh_key": open(sys.argv[2]).read()}))' "$ssh_port" "$work/id_rsa")
fi
echo "{\"host\": \"127.0.0.1\", \"port\": $port}" > "$work/config_plain.json"
echo "{\"host\": \"127.0.0.1\", \"port\": $port$via}" > "$work/config_a.json"
echo "{\"host\": \"127.0.0.1\", \"port\": $port$via${B_CONFIG:+, $B_CONFIG}}" > "$work/config_b.json"
target/release/examples/gen_records "$N" --streams 3 --state-every 1000 > "$work/in.jsonl"

# Seconds one run of binary $1 takes with config $2 (the server flushed first); fails if the run does.
one_run() {
  redis-cli -p "$port" FLUSHALL >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  "$1" write --config "$2" --catalog "$work/catalog.json" < "$work/in.jsonl" > "$work/out.jsonl"
  t1=$(date +%s.%N)
  grep -q '"Wrote '"$N"' records' "$work/out.jsonl" || { tail -3 "$work/out.jsonl"; return 1; }
  echo "$t1 - $t0" | bc -l
}

one_run "$A" "$work/config_a.json" >/dev/null && one_run "$B" "$work/config_b.json" >/dev/null   # warm-up, not counted
a_times=(); b_times=(); p_times=()
for i in $(seq 1 "$ROUNDS"); do
  a=$(one_run "$A" "$work/config_a.json"); b=$(one_run "$B" "$work/config_b.json")
  a_times+=("$a"); b_times+=("$b")
  if [ "$TUNNEL" = 1 ]; then p_times+=("$(one_run "$B" "$work/config_plain.json")"); fi
  printf 'round %d: A %.3f s, B %.3f s, A/B %.3f\n' "$i" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done
python3 - "$N" "${a_times[*]}" "${b_times[*]}" "${p_times[*]:-}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
a = [float(x) for x in sys.argv[2].split()]
b = [float(x) for x in sys.argv[3].split()]
plain = [float(x) for x in sys.argv[4].split()]
ratios = [x / y for x, y in zip(a, b)]
print(f"A: median {statistics.median(a):.3f} s ({n / statistics.median(a):,.0f} records/s)")
print(f"B: median {statistics.median(b):.3f} s ({n / statistics.median(b):,.0f} records/s)")
print(f"A/B per pair: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
if plain:
    p = statistics.median(plain)
    print(f"plain connection (B, no tunnel): median {p:.3f} s ({n / p:,.0f} records/s)")
    print(f"tunnel/plain speed: A {p / statistics.median(a):.2f}, B {p / statistics.median(b):.2f}")
PY
