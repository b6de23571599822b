#!/usr/bin/env bash
# Side-by-side benchmark against one freshly started redis-server (persistence off), same N records
# (default 1,000,000 generated Airbyte records of about 330 bytes of JSON data, 3 streams):
#   1. destination-redis write, a state every 1,000 records
#   2. the same with a state every 100 records
#   3. the server's limit for plain hashes: redis-cli --pipe of one HSET per record (same fields/values)
#   4. the server's limit for this design: redis-cli --pipe of our own append-script EVALSHA batches
#   4b. the same batches through the append script as it was before every new key was checked (only
#      the first and last; made from lua/append_batch.lua), for the cost of the all-keys check
#   5. the Java connector's access pattern (INCR+HSET per record, then KEYS + INCR+RENAME), N_JAVA records
#   6. write (state every 1,000) over TLS and through an SSH tunnel (a local sshd), as ratios to 1
# Each is run ROUNDS times (default 3), interleaved; medians are reported with the ratios 1/3, 1/4, 2/1,
# 1/5 and the destination's peak RSS. CURVE="100 250 500 1000 2000" adds write's batch-size curve,
# each size with the EVALSHA pipe of its own batches beside it.
# RTT_MS="0 0.2 1" adds network round-trip time as a dimension: at each RTT (milliseconds; a
# userspace delay line on loopback, `bench_tools delay-line`, holds each chunk RTT/2 each way, and
# the RTT it really gives is measured with PINGs), write, the EVALSHA pipe of the same batches and
# the Java connector's pattern (N_JAVA_RTT records, default 1,000) all go through the same line.
# MAIN=0 skips measurements 1-6 (for a run of the curve or the RTT table alone).
# With CURVE or RTT_MS, the plots (SVG, gnuplot) of records/s against batch size and against RTT go
# to PLOTS (default docs/bench) as batch-size.svg and rtt.svg, their data beside them (.dat;
# `bash scripts/plot-bench.sh DIR` draws them again from the data).
#   bash scripts/bench.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-1000000}
ROUNDS=${ROUNDS:-3}
N_JAVA=${N_JAVA:-20000}
STREAMS=${STREAMS:-3}
BATCH=${BATCH:-500}
CURVE=${CURVE:-}
RTT_MS=${RTT_MS:-}
N_JAVA_RTT=${N_JAVA_RTT:-1000}
MAIN=${MAIN:-1}
PLOTS=${PLOTS:-docs/bench}

install_missing
cargo build --release --locked --bin destination-redis --example gen_records --example bench_tools 2>&1 | tail -1

setup_work
make_certs
tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REDIS_EXTRA=(--tls-port "$tls_port" --tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key"
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no)
start_redis
start_sshd
delay_pid=""
trap 'stop_sshd; if [ -n "$delay_pid" ]; then kill "$delay_pid" 2>/dev/null || true; fi; if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
cli() { redis-cli -p "$port" "$@"; }

echo "=== inputs: $N records, $STREAMS streams"
names=(users orders events); names=("${names[@]:0:$STREAMS}")
append_catalog "$work/catalog.json" "${names[@]}"
echo "{\"host\": \"127.0.0.1\", \"port\": $port, \"batch_size\": $BATCH}" > "$work/config.json"
python3 - "$work" "$tls_port" "$port" "$ssh_port" "$BATCH" <<'PY'
import json, sys
work, tls_port, port, ssh_port, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ca = open(f"{work}/ca.pem").read()
json.dump({"host": "127.0.0.1", "port": tls_port, "batch_size": batch, "ssl": True,
           "ssl_mode": {"mode": "verify-full", "ca_certificate": ca}}, open(f"{work}/config_tls.json", "w"))
json.dump({"host": "127.0.0.1", "port": port, "batch_size": batch,
           "tunnel_method": {"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "127.0.0.1", "tunnel_port": ssh_port,
                             "tunnel_user": "root", "ssh_key": open(f"{work}/id_rsa").read()}},
          open(f"{work}/config_ssh.json", "w"))
PY
target/release/examples/gen_records "$N" --streams "$STREAMS" --state-every 1000 > "$work/in1000.jsonl"
target/release/examples/gen_records "$N" --streams "$STREAMS" --state-every 100 > "$work/in100.jsonl"
target/release/examples/bench_tools resp-hset "$work/in1000.jsonl" "$work/hset.resp"
target/release/examples/bench_tools resp-evalsha "$work/in1000.jsonl" "$work/evalsha.resp" "$BATCH"
# The ends-only script: lua/append_batch.lua with its check of every new key replaced by the check
# of the first and last key that it had before (same arguments, same writes).
python3 - lua/append_batch.lua "$work/append_batch_ends_only.lua" <<'PY'
import sys
text = open(sys.argv[1]).read()
start = text.index("-- Every new key of the batch is checked")
end = text.index("if redis.acl_check_cmd then")
ends = '''local multi = true
local keys = {}
for i = 1, n do
  keys[i] = prefix .. (last + i)
end
if redis.call('EXISTS', keys[1]) == 1 then
  return redis.error_reply('ABEXISTS ' .. keys[1])
end
if n > 1 and redis.call('EXISTS', keys[n]) == 1 then
  return redis.error_reply('ABEXISTS ' .. keys[n])
end
'''
open(sys.argv[2], "w").write(text[:start] + ends + text[end:])
PY
sha_of() { sha1sum "$1" | cut -d' ' -f1; }
# The same calls to the ends-only script: only the 40-character SHA differs.
sed "s/$(sha_of lua/append_batch.lua)/$(sha_of "$work/append_batch_ends_only.lua")/g" \
  "$work/evalsha.resp" > "$work/evalsha_ends.resp"
bytes=$(stat -c %s "$work/in1000.jsonl")
echo "input: $((bytes / 1000000)) MB; hset pipe $(( $(stat -c %s "$work/hset.resp") / 1000000 )) MB; evalsha pipe $(( $(stat -c %s "$work/evalsha.resp") / 1000000 )) MB"

now() { date +%s.%N; }
results="$work/results.txt"
: > "$results"
fresh() { cli FLUSHALL >/dev/null; cli SCRIPT FLUSH >/dev/null; }
run_write() { # name input config
  fresh
  local t0 t1; t0=$(now)
  /usr/bin/time -f "%M" -o "$work/rss" target/release/destination-redis write --config "$3" \
    --catalog "$work/catalog.json" < "$2" > "$work/out.jsonl"
  t1=$(now)
  local got=0; for s in "${names[@]}"; do got=$((got + $(cli GET "demo:$s"))); done
  [ "$got" -eq "$N" ] || { echo "$1: wrote $got of $N"; exit 1; }
  echo "$1 $(echo "$t1 - $t0" | bc) $(cat "$work/rss")" >> "$results"
}
run_pipe() { # name file [script]
  fresh
  cli -x SCRIPT LOAD < "${3:-lua/append_batch.lua}" >/dev/null
  local t0 t1; t0=$(now)
  cli --pipe < "$2" > "$work/pipe.txt"
  t1=$(now)
  grep -q "errors: 0" "$work/pipe.txt" || { echo "$1: $(cat "$work/pipe.txt")"; exit 1; }
  echo "$1 $(echo "$t1 - $t0" | bc) 0" >> "$results"
}
main_rounds=$ROUNDS
[ "$MAIN" = 0 ] && main_rounds=0
for round in $(seq 1 "$main_rounds"); do
  echo "=== round $round of $ROUNDS"
  run_write write_state1000 "$work/in1000.jsonl" "$work/config.json"
  run_write write_state100 "$work/in100.jsonl" "$work/config.json"
  run_write write_tls "$work/in1000.jsonl" "$work/config_tls.json"
  run_write write_ssh "$work/in1000.jsonl" "$work/config_ssh.json"
  run_pipe hset_pipe "$work/hset.resp"
  run_pipe evalsha_pipe "$work/evalsha.resp"
  run_pipe evalsha_ends_pipe "$work/evalsha_ends.resp" "$work/append_batch_ends_only.lua"
  fresh
  echo "java_pattern $(target/release/examples/bench_tools java-pattern "$port" "$work/in1000.jsonl" "$N_JAVA") 0" >> "$results"
done
run_pipe_at() { # name file port: the EVALSHA batches sent through port
  fresh
  cli -x SCRIPT LOAD < lua/append_batch.lua >/dev/null
  local t0 t1; t0=$(now)
  redis-cli -p "$3" --pipe < "$2" > "$work/pipe.txt"
  t1=$(now)
  grep -q "errors: 0" "$work/pipe.txt" || { echo "$1: $(cat "$work/pipe.txt")"; exit 1; }
  echo "$1 $(echo "$t1 - $t0" | bc) 0" >> "$results"
}
measured_rtt() { # port: the median round trip of 200 PINGs, in ms
  python3 - "$1" <<'PY'
import socket, statistics, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(200):
    t = time.perf_counter(); s.sendall(b"PING\r\n"); s.recv(64); times.append(time.perf_counter() - t)
print(f"{statistics.median(times) * 1000:.3f}")
PY
}
for rtt in $RTT_MS; do
  if [ "$rtt" = 0 ]; then
    rport=$port
  else
    target/release/examples/bench_tools delay-line "$port" "$(echo "$rtt / 2" | bc -l)" > "$work/delay_$rtt.port" &
    delay_pid=$!
    for _ in $(seq 1 50); do [ -s "$work/delay_$rtt.port" ] && break; sleep 0.1; done
    rport=$(head -1 "$work/delay_$rtt.port")
  fi
  echo "{\"host\": \"127.0.0.1\", \"port\": $rport, \"batch_size\": $BATCH}" > "$work/config_rtt.json"
  echo "rtt_$rtt measured $(measured_rtt "$rport") ms" | tee -a "$work/rtt.txt"
  for round in $(seq 1 "$ROUNDS"); do
    echo "=== RTT $rtt ms, round $round of $ROUNDS"
    run_write "rtt_${rtt}_write" "$work/in1000.jsonl" "$work/config_rtt.json"
    run_pipe_at "rtt_${rtt}_evalsha" "$work/evalsha.resp" "$rport"
    fresh
    echo "rtt_${rtt}_java $(target/release/examples/bench_tools java-pattern "$rport" "$work/in1000.jsonl" "$N_JAVA_RTT") 0" >> "$results"
  done
  if [ -n "$delay_pid" ]; then kill "$delay_pid"; wait "$delay_pid" 2>/dev/null || true; delay_pid=""; fi
done
if [ -n "$CURVE" ]; then
  for b in $CURVE; do
    echo "{\"host\": \"127.0.0.1\", \"port\": $port, \"batch_size\": $b}" > "$work/config_$b.json"
    target/release/examples/bench_tools resp-evalsha "$work/in1000.jsonl" "$work/evalsha_$b.resp" "$b"
  done
  for round in $(seq 1 "$ROUNDS"); do
    echo "=== batch-size curve, round $round of $ROUNDS"
    for b in $CURVE; do
      run_write "curve_${b}_write" "$work/in1000.jsonl" "$work/config_$b.json"
      run_pipe "curve_${b}_evalsha" "$work/evalsha_$b.resp"
    done
  done
fi

touch "$work/rtt.txt"
mkdir -p "$PLOTS"
stamp="$(date -u +%F), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src lua 2>/dev/null || echo ' + local changes')"
python3 - "$results" "$N" "$N_JAVA" "$bytes" "$N_JAVA_RTT" "$work/rtt.txt" "$PLOTS" "$BATCH" "$stamp" <<'PY'
import statistics, sys
path, n, n_java, size, n_java_rtt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
measured = dict(line.split()[0::2][:2] for line in open(sys.argv[6]))
plots, batch, stamp = sys.argv[7], int(sys.argv[8]), sys.argv[9]
runs = {}
for line in open(path):
    name, secs, rss = line.split()
    runs.setdefault(name, []).append((float(secs), int(rss)))
med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
def records_of(k):
    return n_java if k == "java_pattern" else n_java_rtt if k.endswith("_java") else n
rate = {k: records_of(k) / v for k, v in med.items()}
labels = {
    "write_state1000": "1 write, state every 1,000",
    "write_state100": "2 write, state every 100",
    "hset_pipe": "3 redis-cli --pipe, HSET per record",
    "evalsha_pipe": "4 redis-cli --pipe, our EVALSHA batches",
    "evalsha_ends_pipe": "4b the same, script checking 2 keys only",
    "java_pattern": "5 Java connector's pattern",
    "write_tls": "6a write over TLS (verify-full)",
    "write_ssh": "6b write through an SSH tunnel",
}
if any(k in med for k in labels):
    print(f"{'measurement':44} {'median s':>9} {'records/s':>11} {'MB/s':>7} {'runs':>5}")
    for k in labels:
        if k not in med:
            continue
        records = records_of(k)
        mbs = size * records / n / med[k] / 1e6
        print(f"{labels[k]:44} {med[k]:9.3f} {rate[k]:11,.0f} {mbs:7.1f} {len(runs[k]):5}")
    def ratio(a, b):
        return rate[a] / rate[b]
    print()
    print(f"ratio 1/3 (write / plain HSET pipe):       {ratio('write_state1000', 'hset_pipe'):.2f}")
    print(f"ratio 1/4 (write / EVALSHA pipe):          {ratio('write_state1000', 'evalsha_pipe'):.2f}")
    print(f"ratio 1/4b (write / ends-only EVALSHA pipe): {ratio('write_state1000', 'evalsha_ends_pipe'):.2f}")
    print(f"ratio 4/4b (all-keys / ends-only check):   {ratio('evalsha_pipe', 'evalsha_ends_pipe'):.2f}")
    print(f"ratio 2/1 (state every 100 / every 1,000): {ratio('write_state100', 'write_state1000'):.2f}")
    print(f"ratio 1/5 (write / Java pattern, per rec): {ratio('write_state1000', 'java_pattern'):.0f}")
    print(f"ratio 6a/1 (TLS / plain):                  {ratio('write_tls', 'write_state1000'):.2f}")
    print(f"ratio 6b/1 (SSH tunnel / plain):           {ratio('write_ssh', 'write_state1000'):.2f}")
    rss = [r for k in ("write_state1000", "write_state100", "write_tls", "write_ssh") for _, r in runs[k]]
    print(f"peak RSS of destination-redis write: {max(rss) / 1024:.1f} MiB (max over runs)")
def curve(file, title, columns, rows):
    """Prints `rows` under `columns` and writes them to PLOTS/file, the title and columns first
    (rates are floats: shown with thousands separators, written whole)."""
    print()
    print(" ".join(f"{c:>13}" for c in columns))
    with open(f"{plots}/{file}", "w") as dat:
        dat.write(f"# title: {title}\n# {' '.join(columns)}\n")
        for row in rows:
            print(" ".join(f"{v:>13,.0f}" if isinstance(v, float) else f"{v:>13}" for v in row))
            dat.write(" ".join(f"{v:.0f}" if isinstance(v, float) else str(v) for v in row) + "\n")
sizes = sorted({int(k.split("_")[1]) for k in med if k.startswith("curve_")})
if sizes:
    curve("batch-size.dat", f"records/s against batch size ({n:,} records, loopback; {stamp})",
          ["batch_size", "write", "evalsha_pipe", "write/pipe"],
          [[b, rate[f"curve_{b}_write"], rate[f"curve_{b}_evalsha"],
            f"{rate[f'curve_{b}_write'] / rate[f'curve_{b}_evalsha']:.2f}"] for b in sizes])
rtts = sorted({k.split("_")[1] for k in med if k.startswith("rtt_")}, key=float)
if rtts:
    rows = []
    for r in rtts:
        w, p, j = (rate[f"rtt_{r}_{x}"] for x in ("write", "evalsha", "java"))
        rows.append([r, measured.get(f"rtt_{r}", "?"), w, p, j, f"{w / p:.2f}", f"{w / j:.0f}"])
    curve("rtt.dat", f"records/s against round-trip time ({n:,} records in batches of {batch}; {stamp})",
          ["rtt_ms", "measured_ms", "write", "evalsha_pipe", "java_pattern", "write/pipe", "write/java"],
          rows)
print(f"(records/s: medians of the interleaved rounds; the data and plots are in {plots})")
PY
if [ -n "$CURVE$RTT_MS" ]; then bash scripts/plot-bench.sh "$PLOTS"; fi
