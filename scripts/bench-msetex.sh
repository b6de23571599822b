#!/usr/bin/env bash
# The string format's expiry, two ways, side by side on one Valkey 9.1 server (Debian sid's, in a
# container on the host network): one `SET key value EX ttl` per record (the portable path every
# server runs) against one `MSETEX n key value … EX ttl` per batch (what append_batch.lua uses
# where the server has it). Each way is a script called once per batch of 500 records of ~330 B
# (300,000 keys per run, sent with redis-cli --pipe); ROUNDS interleaved rounds on a flushed
# database; prints each run, the medians and the per-pair ratio.
#   bash scripts/bench-msetex.sh          (ROUNDS=5; needs Docker: scripts/docker.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/docker.sh
ROUNDS=${ROUNDS:-5}
docker_up >/dev/null
redis_image sid:valkey-server
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cid=$("$DOCKER" run -d --rm --network host "$(matrix_tag sid:valkey-server)" \
  valkey-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no)
trap '"$DOCKER" rm -f "$cid" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 1 250); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.02; done
echo "server: $(redis-cli -p "$port" INFO server | tr -d '\r' | grep -E '^(valkey|redis)_version')"

per_key='for i = 1, #KEYS do redis.call("SET", KEYS[i], ARGV[i], "EX", 86400) end return #KEYS'
batched='local a = {#KEYS} for i = 1, #KEYS do a[#a + 1] = KEYS[i] a[#a + 1] = ARGV[i] end a[#a + 1] = "EX" a[#a + 1] = 86400 redis.call("MSETEX", unpack(a)) return #KEYS'
python3 - "$work" "$(redis-cli -p "$port" SCRIPT LOAD "$per_key")" "$(redis-cli -p "$port" SCRIPT LOAD "$batched")" <<'PY'
import sys
work, shas = sys.argv[1], sys.argv[2:]
value = ('{"id":%d,"name":"generated record","email":"someone@example.com","note":"' + "x" * 230 + '"}')
def bulk(b): return b"$%d\r\n%s\r\n" % (len(b), b)
for name, sha in zip(("per_key", "batched"), shas):
    with open(f"{work}/{name}.resp", "wb") as f:
        for batch in range(600):
            ids = range(batch * 500, batch * 500 + 500)
            args = [b"EVALSHA", sha.encode(), b"500"] + [b"demo:pages:%d" % i for i in ids] + [(value % i).encode() for i in ids]
            f.write(b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args))
PY
timed() {
  redis-cli -p "$port" FLUSHALL >/dev/null
  local t0 t1; t0=$(date +%s.%N)
  redis-cli -p "$port" --pipe < "$work/$1.resp" | grep -q "errors: 0" || { echo "errors in $1" >&2; return 1; }
  t1=$(date +%s.%N)
  [ "$(redis-cli -p "$port" DBSIZE)" = 300000 ] || { echo "$1 wrote $(redis-cli -p "$port" DBSIZE) keys" >&2; return 1; }
  echo "$t1 - $t0" | bc -l
}
timed per_key >/dev/null; timed batched >/dev/null   # warm-up
p=(); b=()
for r in $(seq 1 "$ROUNDS"); do
  p+=("$(timed per_key)"); b+=("$(timed batched)")
  printf 'round %d: SET EX per key %.3f s, MSETEX per batch %.3f s\n' "$r" "${p[-1]}" "${b[-1]}"
done
python3 - "${p[*]}" "${b[*]}" <<'PY'
import statistics, sys
p, b = ([float(x) for x in a.split()] for a in sys.argv[1:3])
r = [x / y for x, y in zip(p, b)]
print(f"SET EX per key: median {statistics.median(p):.3f} s; MSETEX per batch: median {statistics.median(b):.3f} s")
print(f"MSETEX speed / SET EX speed per pair: median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})")
PY
