# Shared by scripts/demo.sh and scripts/bench.sh (sourced, not run).

# Installs with apt-get whatever of redis-server, redis-cli, /usr/bin/time, bc and python3 is missing.
install_missing() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  [ -x /usr/bin/time ] || need+=(time)
  command -v bc >/dev/null 2>&1 || need+=(bc)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# Makes a work dir ($work) and an EXIT trap that stops the server started by start_redis and removes it.
setup_work() {
  work=$(mktemp -d)
  server_pid=""
  trap 'if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
}

# Starts redis-server (persistence off) on a free loopback port in $work; sets $port and $server_pid.
start_redis() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no &
  server_pid=$!
  for _ in $(seq 1 250); do
    redis-cli -p "$port" PING >/dev/null 2>&1 && return 0
    sleep 0.02
  done
  cat "$work/redis.log"
  return 1
}
