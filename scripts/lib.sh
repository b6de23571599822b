# Shared by scripts/demo.sh and scripts/bench.sh (sourced, not run).

# Installs with apt-get whatever of redis-server, redis-cli, /usr/bin/time, bc and python3 is missing.
install_missing() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  [ -x /usr/bin/time ] || need+=(time)
  command -v bc >/dev/null 2>&1 || need+=(bc)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
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

# Starts redis-server (persistence off) on a free loopback port in $work, with the extra arguments in
# the array REDIS_EXTRA if set; sets $port and $server_pid.
start_redis() {
  [ -n "${REDIS_EXTRA+x}" ] || REDIS_EXTRA=()
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no "${REDIS_EXTRA[@]}" &
  server_pid=$!
  for _ in $(seq 1 250); do
    redis-cli -p "$port" PING >/dev/null 2>&1 && return 0
    sleep 0.02
  done
  cat "$work/redis.log"
  return 1
}

# A throwaway CA and a server certificate for 127.0.0.1/localhost in $work (openssl CLI).
make_certs() {
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 1 \
    -subj "/CN=destination-redis bench CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$work/server.key" -out "$work/server.csr" \
    -subj "/CN=destination-redis bench server" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$work/ext"
  openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/server.pem" -days 1 -extfile "$work/ext" 2>/dev/null
}

# A throwaway sshd on a free loopback port (root may log in with $work/id_rsa); sets $ssh_port.
start_sshd() {
  mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N "" -f "$work/host_key"
  ssh-keygen -q -t rsa -b 2048 -m PEM -N "" -f "$work/id_rsa"
  cp "$work/id_rsa.pub" "$work/authorized_keys"
  ssh_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$work/sshd_config" <<CFG
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin yes
AllowTcpForwarding yes
LogLevel ERROR
CFG
  /usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log"
  for _ in $(seq 1 250); do (exec 3<>"/dev/tcp/127.0.0.1/$ssh_port") 2>/dev/null && return 0; sleep 0.02; done
  cat "$work/sshd.log"; return 1
}

stop_sshd() {
  [ -f "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2>/dev/null || true
}

# Writes an append catalog of streams demo.<name> for each name given: append_catalog FILE NAME...
append_catalog() {
  local file=$1 sep="" s; shift
  {
    echo '{"streams": ['
    for s in "$@"; do
      printf '%s{"stream": {"name": "%s", "namespace": "demo", "json_schema": {}}, "sync_mode": "incremental", "destination_sync_mode": "append"}\n' "$sep" "$s"; sep=","
    done
    echo ']}'
  } > "$file"
}
